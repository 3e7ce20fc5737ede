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

  it("runs the GRPO attention shape that once aborted the module (batch 256, m 290, k 32, n 145, transposed b)", () => {
    const [got, want] = tf.tidy(() => {
      const a = r([128, 2, 290, 32], 5), b = r([128, 2, 145, 32], 6)
      const c = tf.reshape(tf.matMul(a, b, false, true), [256, 290, 145])
      const pick = (x: tf.Tensor, i: number, rows: number, cols: number) => tf.reshape(tf.slice(tf.reshape(x, [256, rows, cols]), [i, 0, 0], [1, -1, -1]), [rows, cols]) as tf.Tensor2D
      // last and a middle product, against 2-D products of the same slices
      return [tf.stack([pick(c, 255, 290, 145), pick(c, 77, 290, 145)]).dataSync() as Float32Array,
        tf.stack([tf.matMul(pick(a, 255, 290, 32), pick(b, 255, 145, 32), false, true), tf.matMul(pick(a, 77, 290, 32), pick(b, 77, 145, 32), false, true)]).dataSync() as Float32Array]
    })
    expect(maxAbsDiff(got, want)).toBeLessThan(1e-4)
  })
})

describe("wasm heap guard", () => {
  beforeAll(async () => {
    await Backend.init({ force: "wasm" })
  })

  it("a tensor of 4 GiB or more is a WasmHeapError naming its shape, not a wrapped-around allocation", () => {
    const before = tf.memory().numTensors
    const a = tf.ones([65536, 1]), b = tf.ones([1, 65536])
    expect(() => tf.matMul(a, b)).toThrow(/wasm heap exhausted: cannot allocate 16384\.0 MiB for a float32 tensor \[65536, 65536\]/)
    tf.dispose([a, b])
    expect(tf.memory().numTensors).toBe(before)
  })

  it("a tensor that does not fit below the kernels' headroom is a WasmHeapError; nothing leaks and the backend keeps working", () => {
    const before = tf.memory()
    // 64 MiB of ballast low in the heap, then an output that would end within 32 MiB of the guard's limit:
    // wherever the allocator puts it (above the ballast), it crosses the limit, or malloc fails outright.
    const ballast = tf.zeros([16 * 2 ** 20])
    const n = 32768, m = Math.floor((WasmKernels.HEAP_MAX - WasmKernels.HEAP_HEADROOM - 32 * 2 ** 20) / 4 / n)
    const a = tf.ones([1, n, 1]), b = tf.ones([1, 1, m])
    expect(() => tf.matMul(a, b)).toThrow(WasmKernels.WasmHeapError)
    // transposed input: the kernel's transposed copy is freed too
    const at = tf.ones([1, 1, n])
    expect(() => tf.matMul(at, b, true, false)).toThrow(/wasm heap exhausted: cannot allocate .* for a float32 tensor \[1, 32768, \d+\]/)
    tf.dispose([ballast, a, b, at])
    expect(tf.memory().numTensors).toBe(before.numTensors)
    expect(tf.memory().numDataBuffers).toBe(before.numDataBuffers)
    const ok = tf.tidy(() => tf.matMul(tf.ones([3, 2]), tf.ones([2, 4])).dataSync())
    expect(Array.from(ok)).toEqual(new Array(12).fill(2))
  })
})
