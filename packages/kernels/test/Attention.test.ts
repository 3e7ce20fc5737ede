import * as tf from "@tensorflow/tfjs"
import { describe, expect, it } from "vitest"
import { Attention, Kernels } from "../src/index.js"
import { backends, lcg, native, relErr, run, useNativeKernels } from "./helpers.js"

/** Causal additive mask [mb, 1, G·T, past+T]; with `pad`, row b also hides its first `b` keys from the rows that still see a later key. */
const mask = (mb: number, G: number, T: number, past: number, pad: boolean): tf.Tensor4D => {
  const S = past + T
  const m = new Float32Array(mb * G * T * S)
  for (let b = 0; b < mb; b++) {
    for (let r = 0; r < G * T; r++) {
      const t = r % T, row = (b * G * T + r) * S
      m.fill(-1e9, row + past + t + 1, row + S)
      if (pad) m.fill(-1e9, row, row + Math.min(b, past + t))
    }
  }
  return tf.tensor4d(m, [mb, 1, G * T, S])
}

interface Case {
  readonly B: number
  readonly H: number
  readonly G: number
  readonly T: number
  readonly past: number
  readonly hd: number
  readonly maskBatch: boolean
  readonly sliced: boolean
}

/** q, k, v (slices of larger tensors when `sliced`), the mask and an upstream gradient for a case. */
const inputs = (c: Case, seed: number) => {
  const S = c.past + c.T
  const r = (shape: [number, number, number, number], s: number) => {
    if (!c.sliced) return tf.randomNormal(shape, 0, 1, "float32", s) as tf.Tensor4D
    const big = tf.randomNormal([shape[0] + 1, shape[1], shape[2] + 3, shape[3] + 2], 0, 1, "float32", s)
    return tf.slice(big, [1, 0, 2, 1], shape) as tf.Tensor4D
  }
  // Scores of a few units, as after the 1/√hd scale: softmax far from uniform and far from one-hot.
  const q = tf.mul(r([c.B, c.H, c.G * c.T, c.hd], seed), 1.5 / Math.sqrt(c.hd)) as tf.Tensor4D
  return {
    q,
    k: r([c.B, c.H, S, c.hd], seed + 1),
    v: r([c.B, c.H, S, c.hd], seed + 2),
    m: mask(c.maskBatch ? c.B : 1, c.G, c.T, c.past, c.maskBatch),
    dy: r([c.B, c.H, c.G * c.T, c.hd], seed + 3)
  }
}

/** Attention output and its gradients in q, k, v under the upstream dy. */
const outputs = (c: Case, seed: number): Array<Float32Array> =>
  tf.tidy(() => {
    const { q, k, v, m, dy } = inputs(c, seed)
    const f = (a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) => tf.sum(tf.mul(Attention.causal(a as tf.Tensor4D, b as tf.Tensor4D, d as tf.Tensor4D, m, c.past), dy))
    const o = Attention.causal(q, k, v, m, c.past)
    return [o, ...tf.grads(f)([q, k, v])].map((t) => t.dataSync() as Float32Array)
  })

const cases: Array<Case> = [
  { B: 2, H: 3, G: 1, T: 37, past: 0, hd: 16, maskBatch: false, sliced: false },
  { B: 1, H: 2, G: 2, T: 70, past: 0, hd: 33, maskBatch: false, sliced: false },
  { B: 3, H: 2, G: 2, T: 19, past: 11, hd: 8, maskBatch: true, sliced: false },
  { B: 2, H: 1, G: 1, T: 131, past: 0, hd: 64, maskBatch: false, sliced: true },
  { B: 2, H: 2, G: 3, T: 5, past: 70, hd: 3, maskBatch: true, sliced: true },
  { B: 1, H: 1, G: 1, T: 1, past: 0, hd: 1, maskBatch: false, sliced: false },
  { B: 4, H: 2, G: 2, T: 29, past: 1, hd: 20, maskBatch: false, sliced: true }
]

describe.skipIf(!native.ok).each(backends)("native causal attention against the composite on the stock kernels (%s)", (backend) => {
  useNativeKernels(backend)

  it("registers forward and backward kernels, and causal runs them", async () => {
    expect(Kernels.installed(backend)?.kernels).toEqual(expect.arrayContaining([Attention.FORWARD, Attention.BACKWARD]))
    const profile = await tf.profile(() => outputs(cases[0], 1))
    expect(profile.kernelNames).toEqual(expect.arrayContaining([Attention.FORWARD, Attention.BACKWARD]))
    expect(profile.kernelNames).not.toContain("Softmax")
  })

  for (const [i, c] of cases.entries()) {
    it(`output and dq, dk, dv match: ${JSON.stringify(c)}`, () => {
      const fast = run(() => outputs(c, 10 * i + 1), false), stock = run(() => outputs(c, 10 * i + 1), true)
      for (const [j, name] of ["o", "dq", "dk", "dv"].entries()) expect(relErr(fast[j], stock[j]), name).toBeLessThan(1e-4)
    })
  }

  it("random shapes match", () => {
    const rand = lcg(7), pick = (n: number) => 1 + Math.floor(rand() * n)
    for (let n = 0; n < 12; n++) {
      const c: Case = { B: pick(3), H: pick(3), G: pick(3), T: pick(90), past: rand() < 0.5 ? 0 : pick(40), hd: pick(40), maskBatch: rand() < 0.5, sliced: rand() < 0.5 }
      const fast = run(() => outputs(c, 100 + n), false), stock = run(() => outputs(c, 100 + n), true)
      for (const [j, name] of ["o", "dq", "dk", "dv"].entries()) expect(relErr(fast[j], stock[j]), `${name} ${JSON.stringify(c)}`).toBeLessThan(1e-4)
    }
  })

  it("leaves no tensors behind and saves no [G·T, S] tensor for the backward", () => {
    const c = cases[2]
    const before = tf.memory().numTensors
    outputs(c, 1)
    expect(tf.memory().numTensors).toBe(before)
  })

  it("falls back to the composite for a mask of another shape, and for a backward without the native kernel", () => {
    const c = cases[2], S = c.past + c.T
    const { q, k, v, dy } = inputs(c, 3)
    const keyMask = tf.zeros([c.B, 1, 1, S]) // padding-only: not the [.., G·T, S] the kernel takes
    const viaOp = Attention.causal(q, k, v, keyMask, c.past).dataSync()
    const direct = tf.matMul(tf.softmax(tf.add(tf.matMul(q, k, false, true), keyMask)), v).dataSync()
    expect(relErr(viaOp, direct)).toBe(0)
    // Forward on the native kernel, backward after the kernels are gone: tf ops compute the same gradients.
    const m = mask(1, c.G, c.T, c.past, false)
    const f = (uninstallAfter: boolean) => (a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) => {
      const o = tf.sum(tf.mul(Attention.causal(a as tf.Tensor4D, b as tf.Tensor4D, d as tf.Tensor4D, m, c.past), dy))
      if (uninstallAfter) Kernels.uninstall(backend)
      return o
    }
    const fallback = tf.grads(f(true))([q, k, v]).map((t) => t.dataSync())
    Kernels.install(backend)
    const fast = tf.grads(f(false))([q, k, v]).map((t) => t.dataSync())
    for (let j = 0; j < 3; j++) expect(relErr(fallback[j], fast[j])).toBeLessThan(1e-4)
  })

  it("rejects a past that does not fit the shapes", () => {
    const { q, k, v, m } = inputs(cases[0], 1)
    expect(() => Attention.causal(q, k, v, m, 5)).toThrow(/past 5 must leave T = S − past/)
    expect(() => Attention.causal(q, k, v, m, 37)).toThrow(RangeError)
  })
})
