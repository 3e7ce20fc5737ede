import * as tf from "@tensorflow/tfjs"
import { describe, expect, it } from "vitest"
import { Elementwise, Kernels } from "../src/index.js"
import { backends, lcg, native, run, useNativeKernels } from "./helpers.js"

/** max |x − y| / (1 + |y|) over the elements, with NaN and ±inf required to match exactly. */
const relErr = (x: Float32Array | Int32Array, y: Float32Array | Int32Array) => {
  expect(x.length).toBe(y.length)
  let e = 0
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(y[i])) {
      expect(Object.is(x[i], y[i]) || (Number.isNaN(x[i]) && Number.isNaN(y[i])), `element ${i}: ${x[i]} vs ${y[i]}`).toBe(true)
      continue
    }
    e = Math.max(e, Math.abs(x[i] - y[i]) / (1 + Math.abs(y[i])))
  }
  return e
}

describe("collapse (broadcast shapes → the fewest strided dims)", () => {
  it("merges contiguous dims and keeps broadcast ones apart", () => {
    expect(Elementwise.collapse([4, 5, 6], [4, 5, 6])).toEqual({ shape: [120], sa: [1], sb: [1] })
    expect(Elementwise.collapse([4, 5, 6], [6])).toEqual({ shape: [20, 6], sa: [6, 1], sb: [0, 1] })
    expect(Elementwise.collapse([4, 5, 6], [4, 5, 1])).toEqual({ shape: [20, 6], sa: [6, 1], sb: [1, 0] })
    expect(Elementwise.collapse([2, 7, 4, 8], [1, 7, 1, 8])).toEqual({ shape: [2, 7, 4, 8], sa: [224, 32, 8, 1], sb: [0, 8, 0, 1] })
    expect(Elementwise.collapse([], [])).toEqual({ shape: [1], sa: [0], sb: [0] })
    expect(Elementwise.collapse([3], [])).toEqual({ shape: [3], sa: [1], sb: [0] })
  })
})

describe.skipIf(!native.ok).each(backends)("native elementwise kernels against the stock kernels (%s)", (backend) => {
  useNativeKernels(backend)

  const r = (shape: Array<number>, seed: number, scale = 1) => tf.mul(tf.randomNormal(shape, 0, 1, "float32", seed), scale)

  it("Exp matches on random values, odd sizes and special values", () => {
    for (const n of [1, 15, 16, 17, 1000, 70001]) {
      const mk = () => tf.tidy(() => tf.exp(r([n], n, 30)).dataSync() as Float32Array)
      expect(relErr(run(mk, false), run(mk, true)), `n=${n}`).toBeLessThan(2e-6)
    }
    const special = [0, -0, 1, -1, 88.7, 88.73, 89, 1000, -87, -87.3, -87.4, -104, -1e9, Infinity, -Infinity, NaN, 1e-30, 20.5]
    const mk = () => tf.tidy(() => tf.exp(tf.tensor1d(special)).dataSync() as Float32Array)
    const fast = run(mk, false), stock = run(mk, true)
    for (let i = 0; i < special.length; i++) {
      // Below −87.34 the stock kernel returns denormals (< 1.2e−38), the native one 0.
      if (special[i] < -87.34) expect(fast[i]).toBeLessThan(1.2e-38)
      else expect(relErr(fast.subarray(i, i + 1), stock.subarray(i, i + 1)), `exp(${special[i]})`).toBeLessThan(2e-6)
    }
  })

  it("Add, Sub, Multiply, RealDiv match on random broadcast shapes (odd sizes, sliced inputs, scalars)", () => {
    const rand = lcg(3)
    const ops: Array<[string, (a: tf.Tensor, b: tf.Tensor) => tf.Tensor]> = [["add", tf.add], ["sub", tf.sub], ["mul", tf.mul], ["div", tf.div]]
    for (let c = 0; c < 60; c++) {
      const rank = Math.floor(rand() * 5)
      const shape = Array.from({ length: rank }, () => 1 + Math.floor(rand() * (rand() < 0.2 ? 300 : 9)))
      // Each operand drops leading dims and turns some dims into 1 (broadcast).
      const variant = () => shape.slice(Math.floor(rand() * (rank + 1) * 0.5)).map((d) => (rand() < 0.3 ? 1 : d))
      const as = variant(), bs = variant()
      const [name, op] = ops[c % 4]
      const sliced = rand() < 0.3
      const mk = () => tf.tidy(() => {
        const a = sliced ? tf.slice(r([...as.slice(0, -1), (as.at(-1) ?? 1) + 3], c + 1), 0, [...as.slice(0, -1), as.at(-1) ?? 1]).reshape(as) : r(as, c + 1)
        const b = name === "div" ? tf.add(tf.abs(r(bs, c + 500)), 0.5) : r(bs, c + 500)
        return op(a, b).dataSync() as Float32Array
      })
      expect(relErr(run(mk, false), run(mk, true)), `case ${c}: ${name} [${as}] [${bs}]`).toBeLessThan(1e-6)
    }
  })

  it("leaves int32 arithmetic to the stock kernels", () => {
    const mk = () => tf.tidy(() => tf.add(tf.tensor1d([1, 2, 3], "int32"), tf.tensor1d([4, 5, 6], "int32")).dataSync() as Int32Array)
    expect(Array.from(run(mk, false))).toEqual([5, 7, 9])
  })

  it("GatherV2 matches on every axis, float32 and int32, and rejects a bad index like the stock kernel", () => {
    const rand = lcg(5)
    for (let c = 0; c < 20; c++) {
      const shape = Array.from({ length: 1 + Math.floor(rand() * 3) }, () => 1 + Math.floor(rand() * 9))
      const axis = Math.floor(rand() * shape.length)
      const idx = Array.from({ length: Math.floor(rand() * 12) }, () => Math.floor(rand() * shape[axis]))
      const int = rand() < 0.3
      const mk = () => tf.tidy(() => {
        const x = int ? tf.cast(r(shape, c + 1, 100), "int32") : r(shape, c + 1)
        return tf.gather(x, tf.tensor1d(idx, "int32"), axis).dataSync() as Float32Array
      })
      expect(relErr(run(mk, false), run(mk, true)), `case ${c}: [${shape}] axis ${axis} [${idx}]`).toBe(0)
    }
    const mk2 = () => tf.tidy(() => tf.gather(r([64, 7], 1), tf.tensor2d([[3, 63], [0, 5]], [2, 2], "int32")).dataSync() as Float32Array)
    expect(relErr(run(mk2, false), run(mk2, true))).toBe(0)
    const before = tf.memory().numTensors
    expect(() => tf.tidy(() => tf.gather(tf.zeros([4, 3]), tf.tensor1d([1, 4], "int32")))).toThrow(/index value 4 is not in \[0, 3\]/)
    expect(tf.memory().numTensors).toBe(before)
  })

  it("Sum matches over neighbouring axes (inner, outer, middle, all, keepDims) and falls back on split axes", () => {
    const rand = lcg(9)
    for (let c = 0; c < 40; c++) {
      const rank = 1 + Math.floor(rand() * 4)
      const shape = Array.from({ length: rank }, () => (rand() < 0.15 ? 1 : 1 + Math.floor(rand() * (rand() < 0.3 ? 60 : 9))))
      const a0 = Math.floor(rand() * rank), a1 = a0 + Math.floor(rand() * (rank - a0))
      const axes = rand() < 0.15 && rank >= 3 ? [0, rank - 1] : Array.from({ length: a1 - a0 + 1 }, (_, i) => a0 + i)
      const keep = rand() < 0.4
      const mk = () => tf.tidy(() => tf.sum(r(shape, c + 1), axes, keep).dataSync() as Float32Array)
      expect(relErr(run(mk, false), run(mk, true)), `case ${c}: [${shape}] axes [${axes}] keepDims ${keep}`).toBeLessThan(1e-5)
    }
    // Long sums: no less accurate than the stock kernel, against a float64 reference. The cpu backend's stock Sum
    // adds in float64, so there the baseline is a float32 running sum (what the wasm kernel and ours do).
    for (const [shape, ax] of [[[300, 700], 0], [[300, 700], 1], [[3, 5000, 2], 1]] as Array<[Array<number>, number]>) {
      const x = r(shape, 1)
      const xs = x.dataSync() as Float32Array
      const [outer, dim] = [shape.slice(0, ax).reduce((p, d) => p * d, 1), shape[ax]]
      const inner = xs.length / outer / dim
      const ref = new Float64Array(outer * inner), f32 = new Float32Array(outer * inner)
      for (let o = 0; o < outer; o++) {
        for (let m = 0; m < dim; m++) {
          for (let i = 0; i < inner; i++) {
            ref[o * inner + i] += xs[(o * dim + m) * inner + i]
            f32[o * inner + i] = Math.fround(f32[o * inner + i] + xs[(o * dim + m) * inner + i])
          }
        }
      }
      const err = (y: Float32Array) => y.reduce((e, v, i) => Math.max(e, Math.abs(v - ref[i])), 0)
      const mk = () => tf.tidy(() => tf.sum(x, ax).dataSync() as Float32Array)
      const fast = err(run(mk, false)), stock = backend === "cpu" ? err(f32) : err(run(mk, true))
      expect(fast, `[${shape}] axis ${ax}: native error ${fast}, stock ${stock}`).toBeLessThanOrEqual(2 * stock + 1e-5)
      x.dispose()
    }
  })

  it("Max over the innermost axes matches a reference and the stock kernel bitwise; NaN rows give NaN on cpu", () => {
    if (backend === "cpu") expect(Kernels.installed(backend)?.kernels).toContain("Max")
    const rand = lcg(13)
    for (let c = 0; c < 30; c++) {
      const rank = 1 + Math.floor(rand() * 4)
      // Small outer axes, the innermost sometimes long (a vocabulary row).
      const shape = Array.from({ length: rank }, (_, i) => 1 + Math.floor(rand() * (i === rank - 1 && rand() < 0.5 ? 3000 : 6)))
      const first = Math.floor(rand() * rank), keep = rand() < 0.5
      const axes = Array.from({ length: rank - first }, (_, i) => first + i)
      const mk = () => tf.tidy(() => {
        const x = r(shape, c + 1)
        return [x.dataSync() as Float32Array, tf.max(x, axes, keep).dataSync() as Float32Array]
      })
      const [x, fast] = run(mk, false), [, stock] = run(mk, true)
      const dim = x.length / fast.length
      const ref = Array.from(fast, (_, o) => x.subarray(o * dim, (o + 1) * dim).reduce((m, v) => Math.max(m, v), -Infinity))
      expect(Array.from(fast), `[${shape}] axes [${axes}]`).toEqual(ref)
      expect(Buffer.from(fast.buffer).equals(Buffer.from(stock.buffer)), `[${shape}] axes [${axes}] bitwise`).toBe(true)
    }
    // Split or outer axes go to the stock kernel.
    const mk = () => tf.tidy(() => tf.max(r([3, 4, 5], 2), [0, 2]).dataSync() as Float32Array)
    expect(Array.from(run(mk, false))).toEqual(Array.from(run(mk, true)))
    if (backend !== "cpu") return
    const rows = tf.tensor2d([[1, NaN, 3], [NaN, 0, 1], [-0, 0, -1], [-5, -7, -6]])
    const m = Array.from(tf.max(rows, 1).dataSync())
    expect(m.slice(0, 2).every(Number.isNaN)).toBe(true)
    expect(Object.is(m[2], -0)).toBe(true)
    expect(m[3]).toBe(-5)
    rows.dispose()
  })

  it("gives the stock gradients through mul, div, sub, add (broadcast) and exp", () => {
    const a = r([5, 7, 3], 1), b = tf.add(tf.abs(r([7, 1], 2)), 0.5), c = r([3], 3)
    const f = (x: tf.Tensor, y: tf.Tensor, z: tf.Tensor) => tf.sum(tf.exp(tf.sub(tf.div(tf.mul(x, y), tf.add(y, z)), 1)))
    const g = () => tf.tidy(() => tf.grads(f)([a, b, c]).map((t) => t.dataSync() as Float32Array))
    const fast = run(g, false), stock = run(g, true)
    for (let i = 0; i < 3; i++) expect(relErr(fast[i], stock[i]), `grad ${i}`).toBeLessThan(1e-5)
    tf.dispose([a, b, c])
  })
})

describe.skipIf(!native.ok).each(backends)("zero-copy Identity and Cast (%s)", (backend) => {
  useNativeKernels(backend)

  it("share the buffer, outlive the original, free it with the last reference, and convert real casts", () => {
    const before = tf.memory()
    const a = tf.tensor1d([1.5, -2, 3])
    const b = tf.clone(a), c = tf.cast(a, "float32")
    expect(tf.memory().numDataBuffers - before.numDataBuffers).toBe(1) // one buffer for three tensors
    a.dispose()
    expect(Array.from(b.dataSync())).toEqual([1.5, -2, 3])
    b.dispose()
    expect(Array.from(c.dataSync())).toEqual([1.5, -2, 3])
    const i = tf.cast(c, "int32")
    expect(i.dtype).toBe("int32")
    expect(Array.from(i.dataSync())).toEqual([1, -2, 3])
    tf.dispose([c, i])
    expect(tf.memory().numBytes).toBe(before.numBytes)
    expect(tf.memory().numTensors).toBe(before.numTensors)
  })

  it("keep a variable's old value intact through assign, and gradients through saved tensors right", () => {
    const v = tf.variable(tf.tensor1d([1, 2, 3]))
    const snapshot = tf.clone(v)
    v.assign(tf.tensor1d([7, 8, 9]))
    expect(Array.from(snapshot.dataSync())).toEqual([1, 2, 3])
    expect(Array.from(v.dataSync())).toEqual([7, 8, 9])
    const x = tf.randomNormal([6, 5], 0, 1, "float32", 4)
    const g = () => tf.tidy(() => tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.exp(t), tf.sigmoid(t))))(x).dataSync() as Float32Array)
    const fast = run(g, false), stock = run(g, true)
    expect(relErr(fast, stock)).toBeLessThan(1e-6)
    tf.dispose([v, snapshot, x])
  })
})
