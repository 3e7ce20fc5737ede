import * as tf from "@tensorflow/tfjs"
import { describe, expect, it } from "vitest"
import { Layout } from "../src/index.js"
import { backends, lcg, native, run, useNativeKernels } from "./helpers.js"

/** The transpose by index arithmetic, in plain JavaScript (the reference). */
const reference = (x: ArrayLike<number>, shape: Array<number>, perm: Array<number>): Array<number> => {
  const out = perm.map((p) => shape[p])
  const stride = shape.map((_, d) => shape.slice(d + 1).reduce((a, b) => a * b, 1))
  const n = out.reduce((a, b) => a * b, 1)
  const y = new Array<number>(n)
  for (let i = 0; i < n; i++) {
    let rem = i, src = 0
    for (let d = out.length - 1; d >= 0; d--) {
      src += (rem % out[d]) * stride[perm[d]]
      rem = Math.floor(rem / out[d])
    }
    y[i] = x[src]
  }
  return y
}

describe("Layout.collapse (a permutation → the fewest strided dims)", () => {
  it("drops size-1 dims and merges dims read in order", () => {
    expect(Layout.collapse([4, 5, 6], [0, 1, 2])).toEqual({ shape: [120], stride: [1] })
    expect(Layout.collapse([4, 5, 6], [1, 0, 2])).toEqual({ shape: [5, 4, 6], stride: [6, 30, 1] })
    expect(Layout.collapse([4, 5, 6], [2, 0, 1])).toEqual({ shape: [6, 20], stride: [1, 6] })
    expect(Layout.collapse([2, 1, 3], [1, 0, 2])).toEqual({ shape: [6], stride: [1] })
    expect(Layout.collapse([], [])).toEqual({ shape: [1], stride: [1] })
  })
})

describe.skipIf(!native.ok).each(backends)("native Transpose and Square against the stock kernels (%s)", (backend) => {
  useNativeKernels(backend)

  it("Transpose matches an index-arithmetic reference and the stock kernel on random shapes and permutations", () => {
    const rand = lcg(21)
    for (let c = 0; c < 60; c++) {
      const rank = 1 + Math.floor(rand() * 5)
      const shape = Array.from({ length: rank }, () => 1 + Math.floor(rand() * (rand() < 0.2 ? 70 : 7)))
      const perm = shape.map((_, i) => i).sort(() => rand() - 0.5)
      const int = c % 5 === 0, sliced = c % 3 === 0
      const make = () => {
        const wide = tf.randomUniform([...shape.slice(0, -1), shape[rank - 1] + (sliced ? 3 : 0)], -100, 100, int ? "int32" : "float32", c + 1)
        return sliced ? tf.slice(wide, shape.map((_, i) => (i === rank - 1 ? 2 : 0)), shape) : wide
      }
      const mk = () => tf.tidy(() => {
        const x = make()
        return [x.dataSync(), tf.transpose(x, perm).dataSync()]
      })
      const [x, fast] = run(mk, false), [, stock] = run(mk, true)
      const label = `[${shape}] perm [${perm}] ${int ? "int32" : "float32"}${sliced ? " sliced" : ""}`
      expect(Array.from(fast), label).toEqual(reference(x, shape, perm))
      expect(Array.from(fast), label).toEqual(Array.from(stock))
    }
  })

  it("Transpose of large tensors, threaded: attention heads, a 2-D transpose, and an identity that shares the buffer", () => {
    const cases: Array<[Array<number>, Array<number>]> = [[[4, 128, 9, 64], [0, 2, 1, 3]], [[1000, 333], [1, 0]], [[3, 170, 90], [0, 2, 1]]]
    for (const [shape, perm] of cases) {
      const mk = () => tf.tidy(() => {
        const x = tf.randomNormal(shape, 0, 1, "float32", 5)
        return [x.dataSync(), tf.transpose(x, perm).dataSync()]
      })
      const [x, fast] = run(mk, false)
      expect(Array.from(fast), `[${shape}] perm [${perm}]`).toEqual(reference(x, shape, perm))
    }
    const before = tf.memory().numDataBuffers
    const x = tf.randomNormal([50, 1, 40]), y = tf.transpose(x, [1, 0, 2])
    expect(tf.memory().numDataBuffers - before).toBe(1)
    expect(y.shape).toEqual([1, 50, 40])
    x.dispose()
    expect(Array.from(y.dataSync()).length).toBe(2000)
    y.dispose()
  })

  it("Square is bitwise the stock kernel's, gradients included", () => {
    for (const n of [1, 17, 70001]) {
      const mk = () => tf.tidy(() => {
        const x = tf.randomNormal([n], 0, 1e3, "float32", n)
        return [tf.square(x).dataSync(), tf.grad((t: tf.Tensor) => tf.sum(tf.square(t)))(x).dataSync()]
      })
      const fast = run(mk, false), stock = run(mk, true)
      for (let i = 0; i < 2; i++) expect(Buffer.from(fast[i].buffer).equals(Buffer.from(stock[i].buffer)), `n=${n} output ${i}`).toBe(true)
    }
  })
})
