import * as tf from "@tensorflow/tfjs"
import { describe, expect, it } from "vitest"
import { AdamW, Kernels } from "../src/index.js"
import { backends, native, relErr, useNativeKernels } from "./helpers.js"

describe.skipIf(!native.ok).each(backends)("native AdamW and UnsortedSegmentSum (%s)", (backend) => {
  useNativeKernels(backend)

  const updates = (stock: boolean, shape: Array<number>, h: AdamW.Hyper, steps: number) => {
    if (stock) Kernels.uninstall(backend)
    try {
      let p = tf.randomNormal(shape, 0, 1, "float32", 1)
      let m = tf.zeros(shape)
      let v = tf.zeros(shape)
      for (let t = 1; t <= steps; t++) {
        const g = tf.randomNormal(shape, 0, 1, "float32", 10 + t)
        const [p1, m1, v1] = AdamW.update(p, m, v, g, { ...h, c1: 1 - h.beta1 ** t, c2: 1 - h.beta2 ** t })
        tf.dispose([p, m, v, g])
        p = p1
        m = m1
        v = v1
      }
      const out = [p, m, v].map((x) => x.dataSync() as Float32Array)
      tf.dispose([p, m, v])
      return out
    } finally {
      if (stock) Kernels.install(backend)
    }
  }

  it("is registered, and gives bitwise the composite's weights and moments", () => {
    expect(Kernels.installed(backend)?.kernels).toContain(AdamW.KERNEL)
    const cases: Array<[Array<number>, Partial<AdamW.Hyper>]> = [
      [[1], {}],
      [[17, 33], { decay: 1 - 1e-3 * 0.1 }],
      [[300, 257], { decay: 0.99, scale: 0.37 }],
      [[5, 7, 3], { scale: 2.5, epsilon: 1e-6 }]
    ]
    for (const [shape, extra] of cases) {
      const h: AdamW.Hyper = { beta1: 0.9, beta2: 0.95, c1: 0, c2: 0, epsilon: 1e-8, decay: 1, learningRate: 1e-3, scale: 1, ...extra }
      const ours = updates(false, shape, h, 3)
      const stock = updates(true, shape, h, 3)
      for (let i = 0; i < 3; i++) expect(Buffer.from(ours[i].buffer).equals(Buffer.from(stock[i].buffer)), `[${shape}] output ${i}`).toBe(true)
    }
  })

  it("falls back to the composite for a mismatched shape", () => {
    const p = tf.ones([4]), m = tf.zeros([4]), v = tf.zeros([4]), g = tf.ones([1])
    const h: AdamW.Hyper = { beta1: 0.9, beta2: 0.95, c1: 0.1, c2: 0.05, epsilon: 1e-8, decay: 1, learningRate: 0.1, scale: 1 }
    const [p1] = AdamW.update(p, m, v, g, h)
    expect(Array.from(p1.dataSync() as Float32Array).every((x) => Math.abs(x - 0.9) < 1e-5)).toBe(true)
    tf.dispose([p, m, v, g, p1])
  })

  it("differentiates tf.gather natively: the segment sum equals onehot(ids)ᵀ · dy", () => {
    for (const [rows, dim, inner] of [[1, 3, 1], [37, 11, 5], [4096, 512, 256], [100, 7, 33]]) {
      const table = tf.randomNormal([dim, inner], 0, 1, "float32", rows)
      const ids = tf.tensor1d(Array.from({ length: rows }, (_, i) => (i * 7919 + 3) % dim), "int32")
      // dy sliced out of a wider tensor: the kernel must read at the slice's offset in the heap
      const dy = tf.slice(tf.randomNormal([rows + 2, inner], 0, 1, "float32", rows + 1), [2, 0], [rows, inner])
      const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.gather(t, ids), dy)))(table)
      const expected = tf.matMul(tf.cast(tf.oneHot(ids, dim), "float32"), dy, true, false)
      const a = g.dataSync(), b = expected.dataSync()
      expect(relErr(a, b), `[${rows}, ${dim}, ${inner}]`).toBeLessThan(1e-5)
      tf.dispose([table, ids, dy, g, expected])
    }
  })

  it("drops segment ids outside [0, numSegments) and is deterministic", () => {
    const x = tf.tensor2d([[1, 2], [3, 4], [5, 6], [7, 8]])
    const ids = tf.tensor1d([0, 5, -1, 0], "int32")
    const out = tf.unsortedSegmentSum(x, ids, 2)
    expect(Array.from(out.dataSync())).toEqual([8, 10, 0, 0])
    tf.dispose([x, ids, out])
  })
})
