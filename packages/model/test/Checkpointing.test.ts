import * as tf from "@tensorflow/tfjs"
import { Backend } from "@r1flow/backend"
import { beforeAll, describe, expect, it } from "vitest"
import { Transformer } from "../src/index.js"
import { ids2d, randomModel, tiny, tinyQwen3 } from "./helpers.js"

beforeAll(async () => {
  await Backend.init()
})

/** Every weight's gradient of a scalar loss on the logits, by HF name. */
const gradients = (model: Transformer.Model, loss: () => tf.Scalar): Map<string, Float32Array> => {
  const { value, grads } = tf.variableGrads(loss, model.weights.map((w) => w.variable))
  const out = new Map(model.weights.map((w) => [w.name, grads[w.variable.name].dataSync() as Float32Array]))
  value.dispose()
  tf.dispose(grads)
  return out
}

const sameBits = (a: Map<string, Float32Array>, b: Map<string, Float32Array>) => {
  expect([...b.keys()]).toEqual([...a.keys()])
  for (const [name, v] of a) expect(Buffer.from(b.get(name)!.buffer).equals(Buffer.from(v.buffer)), name).toBe(true)
}

describe("activation checkpointing", () => {
  // A loss that weights every logit differently, so each gradient entry matters.
  const weighted = (logits: tf.Tensor) => tf.sum(tf.mul(logits, tf.linspace(-1, 1, logits.size).reshape(logits.shape))) as tf.Scalar

  for (const [label, config] of [["llama", tiny], ["qwen3 options", { ...tinyQwen3, attentionBias: true }]] as const) {
    it(`gives bitwise the same logits and gradients (${label})`, () => {
      const m = randomModel(config, 3)
      const ids = ids2d([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]])
      const plain = gradients(m, () => weighted(Transformer.forward(m, ids)))
      const ck = gradients(m, () => weighted(Transformer.forward(m, ids, { checkpoint: true })))
      sameBits(plain, ck)
      const [a, b] = tf.tidy(() => [Transformer.forward(m, ids).dataSync(), Transformer.forward(m, ids, { checkpoint: true }).dataSync()])
      expect(Buffer.from(b.buffer).equals(Buffer.from(a.buffer))).toBe(true)
      ids.dispose()
      m.dispose()
    })
  }

  it("gives the same gradients through a shared prefix", () => {
    const m = randomModel(tiny, 4)
    const prefix = ids2d([[1, 2, 3]]), suffix = ids2d([[4, 5], [6, 7], [8, 9]])
    const loss = (checkpoint: boolean) => () => {
      const out = Transformer.forwardShared(m, prefix, suffix, { checkpoint })
      return tf.add(weighted(out.prefix), weighted(out.suffix)) as tf.Scalar
    }
    sameBits(gradients(m, loss(false)), gradients(m, loss(true)))
    m.dispose()
  })

  it("leaks no tensors and keeps fewer of them alive for the backward", () => {
    const m = randomModel(tiny, 5)
    const ids = ids2d([[1, 2, 3, 4, 5, 6, 7, 8]])
    const before = tf.memory().numTensors
    gradients(m, () => weighted(Transformer.forward(m, ids, { checkpoint: true })))
    expect(tf.memory().numTensors).toBe(before)
    // Tensors held for the backward: counted at the peak of a variableGrads call through tf.memory() inside the loss.
    const held = (checkpoint: boolean) => {
      let n = 0
      tf.tidy(() => {
        tf.variableGrads(() => {
          const y = weighted(Transformer.forward(m, ids, { checkpoint }))
          n = tf.memory().numBytes
          return y
        }, m.weights.map((w) => w.variable))
      })
      return n
    }
    expect(held(true)).toBeLessThan(held(false))
    ids.dispose()
    m.dispose()
  })
})
