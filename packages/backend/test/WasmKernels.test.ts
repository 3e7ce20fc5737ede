import * as tf from "@tensorflow/tfjs"
import { beforeAll, describe, expect, it } from "vitest"
import { Backend, WasmKernels } from "../src/index.js"

const run = (f: () => tf.Tensor, stock: boolean): Float32Array => {
  if (stock) WasmKernels.uninstall()
  try {
    return tf.tidy(() => f().dataSync() as Float32Array)
  } finally {
    if (stock) WasmKernels.install()
  }
}

const maxAbsDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0)

describe("wasm BatchMatMul replacement", () => {
  beforeAll(async () => {
    await Backend.init({ force: "wasm" })
  })

  const r = (shape: Array<number>, seed: number) => tf.randomNormal(shape, 0, 1, "float32", seed)
  const cases: Array<[string, () => tf.Tensor]> = [
    ["2-D", () => tf.matMul(r([7, 5], 1), r([5, 3], 2))],
    ["2-D transpose a", () => tf.matMul(r([5, 7], 1), r([5, 3], 2), true, false)],
    ["2-D transpose b", () => tf.matMul(r([7, 5], 1), r([3, 5], 2), false, true)],
    ["2-D transpose both", () => tf.matMul(r([5, 7], 1), r([3, 5], 2), true, true)],
    ["batched", () => tf.matMul(r([2, 3, 7, 5], 1), r([2, 3, 5, 4], 2))],
    ["batched transpose b", () => tf.matMul(r([6, 7, 5], 1), r([6, 4, 5], 2), false, true)],
    ["batched transpose a", () => tf.matMul(r([6, 5, 7], 1), r([6, 5, 4], 2), true, false)],
    ["3-D × 2-D broadcast", () => tf.matMul(r([4, 7, 5], 1), r([5, 3], 2))],
    ["2-D × 3-D broadcast", () => tf.matMul(r([7, 5], 1), r([4, 5, 3], 2))]
  ]
  for (const [name, f] of cases) {
    it(`matches the stock kernel: ${name}`, () => {
      const fast = run(f, false)
      const stock = run(f, true)
      expect(fast.length).toBe(stock.length)
      expect(maxAbsDiff(fast, stock)).toBeLessThan(1e-5)
    })
  }

  it("gives the stock gradients and leaks no tensors", () => {
    const a = r([3, 6, 4], 3), b = r([3, 4, 5], 4)
    const grads = (stock: boolean) => {
      if (stock) WasmKernels.uninstall()
      try {
        return tf.tidy(() => tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.square(tf.matMul(x, y))))([a, b]).map((g) => g.dataSync() as Float32Array))
      } finally {
        if (stock) WasmKernels.install()
      }
    }
    const before = tf.memory().numTensors
    const fast = grads(false)
    expect(tf.memory().numTensors).toBe(before)
    const stock = grads(true)
    expect(maxAbsDiff(fast[0], stock[0])).toBeLessThan(1e-4)
    expect(maxAbsDiff(fast[1], stock[1])).toBeLessThan(1e-4)
  })
})
