import * as tf from "@tensorflow/tfjs"
import { Backend } from "@r1flow/backend"
import { Attention, Kernels, Native } from "@r1flow/kernels"
import { beforeAll, describe, expect, it } from "vitest"
import { Transformer } from "../src/index.js"
import { ids2d, maxAbsDiff, randomModel, tiny, tinyQwen3 } from "./helpers.js"

const native = Native.load()
if (!native.ok) console.warn(`@r1flow/model: fused-attention tests skipped: ${native.reason}`)

/** Logits and the gradients of every weight under a fixed projection of the logits, with or without the native kernels. */
const run = (model: Transformer.Model, f: () => tf.Tensor, nativeKernels: boolean): Array<Float32Array> => {
  if (!nativeKernels) Kernels.uninstall()
  try {
    return tf.tidy(() => {
      const logits = f()
      const proj = tf.randomNormal(logits.shape, 0, 1, "float32", 5)
      const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(f(), proj)) as tf.Scalar, model.weights.map((w) => w.variable))
      void value
      return [logits, ...model.weights.map((w) => grads[w.variable.name])].map((t) => t.dataSync() as Float32Array)
    })
  } finally {
    if (!nativeKernels) Kernels.install()
  }
}

const compare = (fast: Array<Float32Array>, stock: Array<Float32Array>) => {
  for (let i = 0; i < fast.length; i++) {
    const scale = Math.max(1, ...Array.from(stock[i], Math.abs))
    expect(maxAbsDiff(fast[i], stock[i]) / scale, i === 0 ? "logits" : `gradient ${i - 1}`).toBeLessThan(1e-4)
  }
}

describe.skipIf(!native.ok)("the model on the fused attention kernel", () => {
  beforeAll(async () => {
    await Backend.init({ force: "wasm" })
    Kernels.install()
  })

  for (const [label, config] of [["", tiny], [" (head width ≠ dModel/nHeads, q/k norms, rope scaling)", tinyQwen3]] as const) {
    it(`Transformer.forward gives the same logits and gradients with and without the native kernels${label}`, async () => {
      const m = randomModel(config, 3)
      const ids = ids2d([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0], [3, 3, 3, 1, 0, 9, 8, 7, 6, 5, 4, 2, 1]])
      const profile = await tf.profile(() => tf.tidy(() => Transformer.forward(m, ids).dataSync()))
      expect(profile.kernelNames).toContain(Attention.FORWARD)
      compare(run(m, () => Transformer.forward(m, ids), true), run(m, () => Transformer.forward(m, ids), false))
      m.dispose()
    })
  }

  it("Transformer.forwardShared (a prefix every row sees: past > 0) matches too", () => {
    const m = randomModel({ ...tiny, nHeads: 6, nKvHeads: 2, dModel: 24 }, 4)
    const prefix = ids2d([[1, 2, 3, 4, 5]]), suffix = ids2d([[6, 7, 8, 9, 10, 11, 12], [12, 11, 10, 9, 8, 7, 6], [0, 1, 0, 1, 0, 1, 0]])
    const f = () => {
      const r = Transformer.forwardShared(m, prefix, suffix)
      return tf.concat([tf.reshape(r.prefix, [-1]), tf.reshape(r.suffix, [-1])])
    }
    compare(run(m, f, true), run(m, f, false))
    m.dispose()
  })
})
