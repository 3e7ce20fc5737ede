import * as tf from "@tensorflow/tfjs"
import { describe, expect, it } from "vitest"
import { Fused } from "../src/index.js"
import { backends, lcg, native, relErr, run, useNativeKernels } from "./helpers.js"

const r = (shape: Array<number>, seed: number, scale = 1) => tf.mul(tf.randomNormal(shape, 0, 1, "float32", seed), scale)
/** A random tensor of `shape` made as a slice of a wider one (the slice of the last axis starts at 2). */
const sliced = (shape: Array<number>, seed: number, scale = 1) =>
  tf.slice(r([...shape.slice(0, -1), shape[shape.length - 1] + 5], seed, scale), shape.map((_, i) => (i === shape.length - 1 ? 2 : 0)), shape)
/** The values of f(xs) and of its gradients wrt xs under the upstream gradient dy. */
const valueAndGrads = (f: (...xs: Array<tf.Tensor>) => tf.Tensor, xs: Array<tf.Tensor>, dy: tf.Tensor) =>
  tf.tidy(() => [f(...xs), ...tf.grads(f)(xs, dy)].map((t) => t.dataSync() as Float32Array))
/** Kernel names one call of f runs. */
const kernelsOf = async (f: () => tf.Tensor) => (await tf.profile(() => f())).kernelNames

/** Checks f's values and gradients, native against the stock composite. */
const compare = (label: string, f: (...xs: Array<tf.Tensor>) => tf.Tensor, make: () => Array<tf.Tensor>, dyShape: Array<number>, seed: number) => {
  const mk = () => tf.tidy(() => valueAndGrads(f, make(), r(dyShape, seed + 900)))
  const fast = run(mk, false), stock = run(mk, true)
  fast.forEach((v, i) => expect(relErr(v, stock[i]), `${label}: ${i === 0 ? "value" : `gradient ${i - 1}`}`).toBeLessThan(1e-5))
}

describe.skipIf(!native.ok).each(backends)("fused RMSNorm, SwiGLU and RoPE, native against the stock composites (%s)", (backend) => {
  useNativeKernels(backend)

  it("run one native kernel each way where installed, and the composites where not", async () => {
    const x = r([4, 6], 1), g = r([6], 2), q = r([1, 3, 2, 4], 3) as tf.Tensor4D, cs = r([1, 3, 1, 4], 4)
    const rot = tf.eye(4) as tf.Tensor2D
    const ops = () => [Fused.rmsNorm(x, g, 1e-6), Fused.swiglu(x, x), Fused.rope(q, cs, cs, rot)]
    expect(await kernelsOf(() => tf.addN(ops().map((t) => tf.sum(t))))).toEqual(expect.arrayContaining(["R1RmsNorm", "R1Swiglu", "R1Rope"]))
    const back = await kernelsOf(() => tf.addN(tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.add(tf.sum(Fused.rmsNorm(a, b, 1e-6)), tf.sum(Fused.swiglu(a, a))))([x, g]).map((t) => tf.sum(t))))
    expect(back).toEqual(expect.arrayContaining(["R1RmsNormGrad", "R1SwigluGrad"]))
    const stock = await run(() => kernelsOf(() => tf.addN(ops().map((t) => tf.sum(t)))), true)
    expect(stock.filter((k) => k.startsWith("R1"))).toEqual([])
    tf.dispose([x, g, q, cs, rot])
  })

  /** dg = Σ_rows dy ⊙ x · r in float64: the sum over rows that both float32 forms only approximate. */
  const rmsDg64 = (x: Float32Array, dy: Float32Array, n: number, w: number, eps: number) => {
    const dg = new Float64Array(w)
    for (let i = 0; i < n; i++) {
      let ss = 0
      for (let j = 0; j < w; j++) ss += x[i * w + j] ** 2
      const rs = 1 / Math.sqrt(ss / w + eps)
      for (let j = 0; j < w; j++) dg[j] += dy[i * w + j] * x[i * w + j] * rs
    }
    return dg
  }

  it("rmsNorm: values and gradients (x, g) on random shapes, odd widths, sliced inputs, threaded sizes", () => {
    const rand = lcg(1)
    const shapes: Array<[number, number]> = [[1, 1], [1, 7], [3, 16], [5, 33], [300, 256], [2000, 40]]
    for (let c = 0; c < 8; c++) shapes.push([1 + Math.floor(rand() * 70), 1 + Math.floor(rand() * 300)])
    shapes.forEach(([n, w], c) => {
      const label = `[${n}, ${w}]${c % 2 === 1 ? " sliced" : ""}`
      const eps = c % 3 === 0 ? 1e-6 : 1e-5
      const mk = () => tf.tidy(() => {
        const xs = [c % 2 === 1 ? sliced([n, w], c + 1, 3) : r([n, w], c + 1, 3), tf.add(r([w], c + 50, 0.2), 1)], dy = r([n, w], c + 900)
        return [...valueAndGrads((x, g) => Fused.rmsNorm(x, g, eps), xs, dy), xs[0].dataSync() as Float32Array, dy.dataSync() as Float32Array]
      })
      const [y, dx, dg, x, dy] = run(mk, false), [yStock, dxStock, dgStock] = run(mk, true)
      expect(relErr(y, yStock), `${label}: value`).toBeLessThan(1e-5)
      expect(relErr(dx, dxStock), `${label}: gradient 0`).toBeLessThan(1e-5)
      // dg sums over n rows, where float32 rounding grows with n in either form (the composite's more, on
      // some CPUs past 1e-5 at 2000 rows): the native dg is held to the float64 sum, and to the composite
      // within the composite's own error of it.
      const ref = rmsDg64(x, dy, n, w, eps)
      expect(relErr(dg, ref), `${label}: gradient 1 against float64`).toBeLessThan(1e-5)
      expect(relErr(dg, dgStock), `${label}: gradient 1`).toBeLessThan(1e-5 + relErr(dgStock, ref))
    })
  })

  it("rmsNorm: gradients are bit-for-bit the same on every run (fixed partial-sum order)", () => {
    const x = r([3000, 96], 7), g = r([96], 8), dy = r([3000, 96], 9)
    const once = () => tf.tidy(() => tf.grads((a: tf.Tensor, b: tf.Tensor) => Fused.rmsNorm(a, b, 1e-6))([x, g], dy).map((t) => Array.from(t.dataSync())))
    const first = once()
    for (let i = 0; i < 3; i++) expect(once()).toEqual(first)
    tf.dispose([x, g, dy])
  })

  it("swiglu: values and gradients (gate, up) on random shapes, saturated gates, sliced inputs", () => {
    const rand = lcg(2)
    const shapes: Array<[number, number]> = [[1, 1], [2, 15], [7, 17], [300, 300], [64, 1024]]
    for (let c = 0; c < 8; c++) shapes.push([1 + Math.floor(rand() * 40), 1 + Math.floor(rand() * 500)])
    shapes.forEach(([n, w], c) => {
      const cut = c % 2 === 0
      compare(`[${n}, ${w}]${cut ? " sliced" : ""}`, (gate, up) => Fused.swiglu(gate, up),
        () => [cut ? sliced([n, w], c + 1, 4) : r([n, w], c + 1, 4), r([n, w], c + 70)], [n, w], c)
    })
    const extremes = [-1000, -100, -89, -88, -20, -1e-3, 0, 1e-3, 20, 88, 89, 100, 1000]
    compare("extreme gates", (gate, up) => Fused.swiglu(gate, up), () => [tf.tensor2d(extremes, [1, extremes.length]), r([1, extremes.length], 5)], [1, extremes.length], 99)
  })

  it("swiglu: falls back to the composite for broadcast shapes", () => {
    const mk = () => tf.tidy(() => Fused.swiglu(r([4, 5], 1), r([5], 2)).dataSync() as Float32Array)
    expect(relErr(run(mk, false), run(mk, true))).toBeLessThan(1e-6)
  })

  /** The rotate-half matrix the model multiplies by in the composite: x · R = [−x₂, x₁]. */
  const rotation = (hd: number) => {
    const m = new Float32Array(hd * hd), h = hd / 2
    for (let j = 0; j < h; j++) {
      m[(j + h) * hd + j] = -1
      m[j * hd + j + h] = 1
    }
    return tf.tensor2d(m, [hd, hd])
  }

  it("rope: values and gradients (x, and cos / sin) for cos batch 1 and B, odd B, T, H, sliced tables", () => {
    const rand = lcg(3)
    const cases: Array<[number, number, number, number]> = [[1, 1, 1, 2], [2, 3, 5, 6], [3, 7, 2, 34], [4, 64, 4, 32], [1, 200, 3, 64]]
    for (let c = 0; c < 6; c++) cases.push([1 + Math.floor(rand() * 4), 1 + Math.floor(rand() * 20), 1 + Math.floor(rand() * 5), 2 * (1 + Math.floor(rand() * 20))])
    cases.forEach(([b, t, h, hd], c) => {
      const rot = rotation(hd)
      for (const cb of b === 1 ? [1] : [1, b]) {
        // Tables as the model makes them: rows of a longer [S, hd] table, sliced and reshaped.
        const table = (seed: number) => tf.reshape(tf.slice(r([t + 3, hd], seed), [2, 0], [t, hd]), [1, t, 1, hd])
        const tables = (seed: number) => (cb === 1 ? table(seed) : tf.concat(Array.from({ length: cb }, (_, i) => table(seed + 10 * i)), 0))
        const cut = c % 2 === 1
        const x = () => (cut ? sliced([b, t, h, hd], c + 1) : r([b, t, h, hd], c + 1))
        const label = `[${b}, ${t}, ${h}, ${hd}] cos batch ${cb}${cut ? " sliced" : ""}`
        compare(label, (xx) => Fused.rope(xx as tf.Tensor4D, tables(c + 20), tables(c + 40), rot), () => [x()], [b, t, h, hd], c)
        compare(`${label}, wrt cos and sin`, (xx, cs, sn) => Fused.rope(xx as tf.Tensor4D, cs, sn, rot), () => [x(), tables(c + 20), tables(c + 40)], [b, t, h, hd], c)
      }
      rot.dispose()
    })
  })

  it("rope: falls back to the composite for tables it does not take ([T, hd])", () => {
    const rot = rotation(8)
    const mk = () => tf.tidy(() => Fused.rope(r([2, 5, 3, 8], 1) as tf.Tensor4D, r([5, 1, 8], 2), r([5, 1, 8], 3), rot).dataSync() as Float32Array)
    expect(relErr(run(mk, false), run(mk, true))).toBeLessThan(1e-6)
    rot.dispose()
  })

  it("leak no tensors, forward or backward", () => {
    const x = r([6, 10], 1), g = r([10], 2), q = r([2, 3, 2, 10], 3), cs = r([1, 3, 1, 10], 4), rot = rotation(10)
    const before = tf.memory().numTensors
    tf.tidy(() => {
      tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) =>
        tf.add(tf.sum(Fused.swiglu(Fused.rmsNorm(a, b, 1e-6), a)), tf.sum(Fused.rope(c as tf.Tensor4D, cs, cs, rot))))([x, g, q])
    })
    expect(tf.memory().numTensors).toBe(before)
    tf.dispose([x, g, q, cs, rot])
  })
})
