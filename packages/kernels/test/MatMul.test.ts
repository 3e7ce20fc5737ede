import * as tf from "@tensorflow/tfjs"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Kernels, Native } from "../src/index.js"
import { backends, lcg, native, run, useNativeKernels } from "./helpers.js"

/** max |x − y| / (1 + max |y|): a relative error that tolerates values near 0. */
const relErr = (x: Float32Array, y: Float32Array) => {
  expect(x.length).toBe(y.length)
  let d = 0, s = 0
  for (let i = 0; i < x.length; i++) {
    d = Math.max(d, Math.abs(x[i] - y[i]))
    s = Math.max(s, Math.abs(y[i]))
  }
  return d / (1 + s)
}

describe.each(backends)("Kernels.install (%s)", (backend) => {
  beforeAll(async () => {
    await tf.setBackend(backend)
    await tf.ready()
  })
  afterAll(() => Kernels.uninstall(backend))

  it("is idempotent and says what it installed or why not", () => {
    const first = Kernels.install(backend)
    const again = Kernels.install(backend)
    expect(again).toEqual(first)
    expect(first.reason.length).toBeGreaterThan(0)
    if (native.ok) expect(first.kernels).toContain("BatchMatMul")
    else expect(first.kernels).toEqual([])
  })
})

describe.skipIf(!native.ok).each(backends)("native BatchMatMul against the stock kernel (%s)", (backend) => {
  useNativeKernels(backend)

  const r = (shape: Array<number>, seed: number) => tf.randomNormal(shape, 0, 1, "float32", seed)
  const fixed: Array<[string, () => tf.Tensor]> = [
    ["2-D", () => tf.matMul(r([7, 5], 1), r([5, 3], 2))],
    ["2-D transpose a", () => tf.matMul(r([5, 7], 1), r([5, 3], 2), true, false)],
    ["2-D transpose b", () => tf.matMul(r([7, 5], 1), r([3, 5], 2), false, true)],
    ["2-D transpose both", () => tf.matMul(r([5, 7], 1), r([3, 5], 2), true, true)],
    ["large 2-D (split over threads)", () => tf.matMul(r([333, 129], 1), r([129, 77], 2))],
    ["large 2-D transpose a (split over threads)", () => tf.matMul(r([129, 333], 1), r([77, 129], 2), true, true)],
    ["large 2-D, wide (columns split over threads)", () => tf.matMul(r([40, 300], 1), r([300, 509], 2))],
    ["large 2-D, wide, both transposed", () => tf.matMul(r([300, 40], 1), r([509, 300], 2), true, true)],
    ["large 2-D, wide, transpose b, OpenBLAS-sized halves", () => tf.matMul(r([100, 700], 1), r([1000, 700], 2), false, true)],
    ["batched 4-D", () => tf.matMul(r([2, 3, 7, 5], 1), r([2, 3, 5, 4], 2))],
    ["batched transpose b", () => tf.matMul(r([6, 7, 5], 1), r([6, 4, 5], 2), false, true)],
    ["batched transpose a", () => tf.matMul(r([6, 5, 7], 1), r([6, 5, 4], 2), true, false)],
    ["3-D × 2-D broadcast (one product)", () => tf.matMul(r([4, 7, 5], 1), r([5, 3], 2))],
    ["3-D × 2-D broadcast, transpose a", () => tf.matMul(r([4, 5, 7], 1), r([3, 5], 2), true, true)],
    ["2-D × 3-D broadcast", () => tf.matMul(r([7, 5], 1), r([4, 5, 3], 2))],
    ["[1, 6] outer × [6] outer", () => tf.matMul(r([1, 6, 3, 5], 1), r([6, 5, 2], 2))],
    ["general broadcast (falls back)", () => tf.matMul(r([2, 1, 3, 5], 1), r([1, 3, 5, 2], 2))],
    ["inner size 0", () => tf.matMul(tf.zeros([3, 0]), tf.zeros([0, 4]))],
    ["empty output", () => tf.matMul(tf.zeros([0, 3]), r([3, 4], 2))],
    ["sliced inputs (offset views in the heap)", () => tf.matMul(tf.slice(r([9, 11], 1), [1, 2], [7, 5]), tf.slice(r([4, 8, 9], 2), [1, 1, 3], [2, 5, 3]))],
    ["matrix-vector", () => tf.matMul(r([1, 64], 1), r([64, 200], 2))],
    ["few rows, no packing, columns split over threads (decoding)", () => tf.matMul(r([16, 256], 1), r([256, 689], 2))],
    ["128 rows, the most the unpacked few-rows path takes, odd sizes", () => tf.matMul(r([128, 130], 1), r([130, 389], 2))],
    ["few rows, odd sizes, sliced", () => tf.matMul(tf.slice(r([40, 40], 1), [3, 1], [31, 37]), tf.slice(r([40, 130], 2), [2, 5], [37, 123]))]
  ]
  for (const [name, f] of fixed) {
    it(`matches: ${name}`, () => {
      const mk = () => tf.tidy(() => f().dataSync() as Float32Array)
      expect(relErr(run(mk, false), run(mk, true))).toBeLessThan(1e-5)
    })
  }

  const randomShapes = (seed: number) => () => {
    const rand = lcg(seed)
    const dim = () => 1 + Math.floor(rand() * (rand() < 0.3 ? 70 : 17))
    for (let c = 0; c < 40; c++) {
      const m = dim(), n = dim(), k = dim(), batch = 1 + Math.floor(rand() * 5)
      const ta = rand() < 0.5, tb = rand() < 0.5
      const mode = Math.floor(rand() * 3) // 0: both batched, 1: A only, 2: B only
      const aShape = [...(mode === 2 ? [] : [batch]), ...(ta ? [k, m] : [m, k])]
      const bShape = [...(mode === 1 ? [] : [batch]), ...(tb ? [n, k] : [k, n])]
      const before = tf.memory().numTensors
      const mk = () => tf.tidy(() => tf.matMul(r(aShape, c + 1), r(bShape, c + 101), ta, tb).dataSync() as Float32Array)
      const fast = run(mk, false)
      expect(tf.memory().numTensors).toBe(before)
      const err = relErr(fast, run(mk, true))
      expect(err, `case ${c}: [${aShape}] × [${bShape}] ta=${ta} tb=${tb}`).toBeLessThan(1e-5)
    }
  }
  it("matches on 40 random shapes (odd sizes, transposes, batch broadcast) with no leaked tensors", randomShapes(7))
  it("matches on 40 random shapes on the addon's own GEMM (BLAS switched off)", () => {
    const addon = (native as { addon: Native.Addon }).addon
    const hadBlas = addon.info().blas !== null
    addon.useBlas(false)
    try {
      randomShapes(8)()
      // Large enough for several K and N blocks of the packed kernel.
      const mk = () => tf.tidy(() => tf.matMul(r([300, 700], 3), r([1100, 700], 4), false, true).dataSync() as Float32Array)
      expect(relErr(run(mk, false), run(mk, true))).toBeLessThan(1e-5)
    } finally {
      addon.useBlas(hadBlas)
    }
  })

  it("gives the stock gradients through tf.grads on random shapes", () => {
    const rand = lcg(11)
    for (let c = 0; c < 12; c++) {
      const m = 1 + Math.floor(rand() * 23), n = 1 + Math.floor(rand() * 23), k = 1 + Math.floor(rand() * 23)
      // tfjs's matMul gradient does not broadcast batch dims, so both sides are 2-D or share the batch.
      const batch = rand() < 0.4 ? [] : [1 + Math.floor(rand() * 4)], ta = rand() < 0.5, tb = rand() < 0.5
      const a = r([...batch, ...(ta ? [k, m] : [m, k])], c + 1), b = r([...batch, ...(tb ? [n, k] : [k, n])], c + 51)
      const g = () => tf.tidy(() => tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.square(tf.matMul(x, y, ta, tb))))([a, b]).map((t) => t.dataSync() as Float32Array))
      const fast = run(g, false), stock = run(g, true)
      expect(relErr(fast[0], stock[0]), `grad a, case ${c}`).toBeLessThan(1e-5)
      expect(relErr(fast[1], stock[1]), `grad b, case ${c}`).toBeLessThan(1e-5)
      tf.dispose([a, b])
    }
  })

  it("reads the current heap after the output allocation grows the wasm memory", () => {
    const a = r([64, 64], 1), b = r([64, 64], 2)
    const expected = run(() => tf.tidy(() => tf.matMul(a, b).dataSync() as Float32Array), true)
    // A large live tensor forces the memory to grow during the product's allocation.
    const big = tf.tidy(() => tf.matMul(a, b).dataSync() as Float32Array)
    const filler = tf.zeros([64 * 1024 * 1024 / 4 + 17])
    const after = tf.tidy(() => tf.matMul(a, b).dataSync() as Float32Array)
    tf.dispose([a, b, filler])
    expect(relErr(big, expected)).toBeLessThan(1e-5)
    expect(relErr(after, expected)).toBeLessThan(1e-5)
  })
})
