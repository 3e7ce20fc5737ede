import * as tf from "@tensorflow/tfjs"
import { Backend } from "@r1flow/backend"
import { Batch, Columns, Rng } from "@r1flow/core"
import { beforeAll, describe, expect, it } from "vitest"
import { LogProbs, Transformer } from "../src/index.js"
import { ids2d, maxAbsDiff, randomModel, tiny } from "./helpers.js"

beforeAll(async () => {
  await Backend.init()
})

describe("LogProbs.tokenLogProbs", () => {
  it("is log softmax of the logits at the next token, and the entropy of that softmax", () => {
    const m = randomModel(tiny, 3)
    const rows = [[1, 5, 2, 7, 3], [4, 4, 0, 12, 1]]
    const { lp, ent, logits } = tf.tidy(() => {
      const r = LogProbs.tokenLogProbs(m, ids2d(rows))
      return { lp: r.logprobs.arraySync(), ent: r.entropy.arraySync(), logits: Transformer.forward(m, ids2d(rows)).arraySync() }
    })
    expect(lp.length).toBe(2)
    expect(lp[0].length).toBe(4)
    for (let b = 0; b < 2; b++) {
      for (let t = 0; t < 4; t++) {
        const z = logits[b][t], max = Math.max(...z)
        const lse = max + Math.log(z.reduce((s, v) => s + Math.exp(v - max), 0))
        expect(lp[b][t]).toBeCloseTo(z[rows[b][t + 1]] - lse, 4)
        const h = -z.reduce((s, v) => s + Math.exp(v - lse) * (v - lse), 0)
        expect(ent[b][t]).toBeCloseTo(h, 4)
      }
    }
    m.dispose()
  })

  it("is differentiable", () => {
    const m = randomModel(tiny, 4)
    const ids = ids2d([[1, 2, 3, 4]])
    const { value, grads } = tf.variableGrads(() => tf.sum(LogProbs.tokenLogProbs(m, ids).logprobs) as tf.Scalar, m.weights.map((w) => w.variable))
    expect(Object.keys(grads).length).toBe(m.weights.length)
    expect(tf.sum(tf.abs(grads[m.weights[1].variable.name])).dataSync()[0]).toBeGreaterThan(0)
    tf.dispose([value, ids, ...Object.values(grads)])
    m.dispose()
  })
})

/** B rows of length T whose first P tokens are the same (row 0's), the rest random; right-padded with 0 past `lengths`. */
const prefixRows = (seed: number, batch: number, time: number, P: number, vocab: number): Int32Array => {
  const rng = Rng.make(seed, "prefix-rows")
  const ids = new Int32Array(batch * time)
  for (let t = 0; t < time; t++) ids[t] = rng.nextInt(vocab)
  for (let b = 1; b < batch; b++) {
    const len = time - (b % 3) // some rows right-padded
    for (let t = 0; t < time; t++) ids[b * time + t] = t < P ? ids[t] : t < len ? rng.nextInt(vocab) : 0
    // make sure row b really differs from row 0 at P (when P < time)
    if (P < time && ids[b * time + P] === ids[P]) ids[b * time + P] = (ids[P] + b) % vocab
  }
  return ids
}

describe("LogProbs.tokenLogProbs with a shared prefix", () => {
  const B = 5, T = 9
  const weights = (m: Transformer.Model) => m.weights.map((w) => w.variable)
  /** logprobs, entropy and the gradient of a weighted sum of both, as flat arrays. */
  const run = (m: Transformer.Model, ids: Int32Array, options: LogProbs.Options) => {
    const wl = tf.tensor2d(Float32Array.from({ length: B * (T - 1) }, (_, i) => Math.sin(i + 1)), [B, T - 1])
    const we = tf.tensor2d(Float32Array.from({ length: B * (T - 1) }, (_, i) => Math.cos(3 * i)), [B, T - 1])
    const x = tf.tensor2d(ids, [B, T], "int32")
    let lp: Float32Array = new Float32Array(), ent: Float32Array = new Float32Array()
    const { value, grads } = tf.variableGrads(() => {
      const r = LogProbs.tokenLogProbs(m, x, options)
      lp = r.logprobs.dataSync() as Float32Array
      ent = r.entropy.dataSync() as Float32Array
      expect(r.logprobs.shape).toEqual([B, T - 1])
      expect(r.entropy.shape).toEqual([B, T - 1])
      return tf.add(tf.sum(tf.mul(r.logprobs, wl)), tf.sum(tf.mul(r.entropy, we))) as tf.Scalar
    }, weights(m))
    const g = m.weights.map((w) => grads[w.variable.name].dataSync() as Float32Array)
    tf.dispose([value, wl, we, x, ...Object.values(grads)])
    return { lp, ent, g }
  }

  for (const [name, config] of [
    ["grouped-query, untied", tiny],
    ["multi-head, tied, q/k/v biases", { ...tiny, nKvHeads: 4, tieEmbeddings: true, attentionBias: true }]
  ] as const) {
    for (const P of [0, 1, 4, T - 2, T - 1, T]) {
      it(`${name}: P = ${P} gives the unshared values and gradients`, () => {
        const m = randomModel(config, 11)
        const ids = prefixRows(P + 1, B, T, P, config.vocabSize)
        expect(LogProbs.commonPrefixLength(ids, B, T)).toBe(P)
        const before = tf.memory().numTensors
        const plain = run(m, ids, { temperature: 0.7 })
        const shared = run(m, ids, { temperature: 0.7, sharedPrefix: P })
        expect(tf.memory().numTensors).toBe(before)
        expect(maxAbsDiff(shared.lp, plain.lp)).toBeLessThan(1e-5)
        expect(maxAbsDiff(shared.ent, plain.ent)).toBeLessThan(1e-5)
        for (let i = 0; i < m.weights.length; i++) {
          const scale = Math.max(1, ...Array.from(plain.g[i], Math.abs))
          expect(maxAbsDiff(shared.g[i], plain.g[i]) / scale, m.weights[i].name).toBeLessThan(1e-4)
        }
        m.dispose()
      })
    }
  }

  it("a shorter sharedPrefix than the common one is also exact", () => {
    const m = randomModel(tiny, 12)
    const ids = prefixRows(3, B, T, 6, tiny.vocabSize)
    const plain = run(m, ids, {}), shared = run(m, ids, { sharedPrefix: 3 })
    expect(maxAbsDiff(shared.lp, plain.lp)).toBeLessThan(1e-5)
    m.dispose()
  })

  it("rejects a sharedPrefix the rows do not share, naming the row and position", () => {
    const m = randomModel(tiny, 13)
    const ids = prefixRows(4, B, T, 2, tiny.vocabSize)
    const x = tf.tensor2d(ids, [B, T], "int32")
    expect(() => LogProbs.tokenLogProbs(m, x, { sharedPrefix: 3 })).toThrow(/row 1 differs from row 0 at position 2/)
    expect(() => LogProbs.tokenLogProbs(m, x, { sharedPrefix: T + 1 })).toThrow(/sharedPrefix/)
    x.dispose()
    m.dispose()
  })
})

describe("Transformer.forwardShared", () => {
  it("equals forward of prefix ++ suffix row by row", () => {
    const m = randomModel(tiny, 14)
    const B = 3, P = 5, S = 4
    const ids = prefixRows(9, B, P + S, P, tiny.vocabSize)
    const [full, pre, suf] = tf.tidy(() => {
      const x = tf.tensor2d(ids, [B, P + S], "int32")
      const r = Transformer.forwardShared(m, tf.slice(x, [0, 0], [1, P]), tf.slice(x, [0, P], [B, S]))
      return [Transformer.forward(m, x).arraySync(), r.prefix.arraySync(), r.suffix.arraySync()]
    })
    for (let b = 0; b < B; b++) {
      expect(maxAbsDiff(pre[0].flat(), full[b].slice(0, P).flat())).toBeLessThan(1e-5)
      expect(maxAbsDiff(suf[b].flat(), full[b].slice(P).flat())).toBeLessThan(1e-5)
    }
    m.dispose()
  })
})

describe("LogProbs.commonPrefixLength", () => {
  it("counts the leading columns where every row agrees", () => {
    expect(LogProbs.commonPrefixLength(Int32Array.from([1, 2, 3, 1, 2, 4]), 2, 3)).toBe(2)
    expect(LogProbs.commonPrefixLength(Int32Array.from([1, 2, 3, 1, 2, 3]), 2, 3)).toBe(3)
    expect(LogProbs.commonPrefixLength(Int32Array.from([5, 2, 3, 1, 2, 3]), 2, 3)).toBe(0)
    expect(LogProbs.commonPrefixLength(Int32Array.from([5, 2, 3]), 1, 3)).toBe(3)
  })
})

describe("LogProbs.completionBatch", () => {
  it("right-pads prompt ++ completion and masks exactly the completion targets", () => {
    const n = 2
    const rollouts = Batch.fromData(Batch.Rollouts, {
      id: Columns.makeUtf8(["a#0", "b#0"]),
      group_id: Columns.makeInt32(new Int32Array([0, 1])),
      prompt: Columns.makeUtf8(["p", "q"]),
      prompt_ids: Columns.int32ListFromRows([[5, 6, 7], [8]]),
      answer: Columns.makeUtf8([null, null]),
      metadata: Columns.makeUtf8([null, null]),
      completion: Columns.makeUtf8(["x", "y"]),
      completion_ids: Columns.int32ListFromRows([[1, 2], [3, 4, 9]]),
      logprobs: Columns.float32ListFromRows([[-0.5, -1.5], [-0.25, -2, -3]]),
      finish_reason: Columns.makeUtf8(["stop", "length"]),
      prompt_length: Columns.makeInt32(new Int32Array([3, 1])),
      completion_length: Columns.makeInt32(new Int32Array([2, 3]))
    })
    const b = LogProbs.completionBatch(rollouts, 0)
    expect(b).toMatchObject({ batch: n, time: 5 })
    expect(Array.from(b.ids)).toEqual([5, 6, 7, 1, 2, /**/ 8, 3, 4, 9, 0])
    expect(Array.from(b.mask)).toEqual([0, 0, 1, 1, /**/ 1, 1, 1, 0])
    expect(maxAbsDiff(b.oldLogprobs, [0, 0, -0.5, -1.5, -0.25, -2, -3, 0])).toBe(0)
  })
})
