// The WGSL attention kernels (R1CausalAttention and its gradient) against `Attention.causal`'s composite of tfjs
// ops, both on the webgpu backend (forced, so lavapipe serves in CI): O, the row log-sum-exp and dQ, dK, dV on
// random odd shapes. Skips, printing why, when no adapter can be had.
import * as tf from "@tensorflow/tfjs"
import { describe, expect, it } from "vitest"
import { WebGpuKernels } from "../src/index.js"
import * as WebGpuTest from "./support/webgpu.js"

const skip = await WebGpuTest.open("WGSL attention tests")
// Dynamic, as Backend loads it (the boundary rule forbids a static import of a lazily loaded library).
const { Attention } = await import("@r1flow/kernels")
const { random, maxRel } = WebGpuTest

/** Sizes, and which of batch / kv head the mask spans (the others broadcast); `padding` hides more keys. */
interface Case {
  readonly B: number
  readonly H: number
  readonly G: number
  readonly T: number
  readonly past: number
  readonly hd: number
  readonly mask: "bh" | "b" | "h" | "none"
  readonly padding: boolean
}

/**
 * The additive mask: −1e9 on the keys after past + t (row g·T + t) and, with padding, on some earlier ones
 * (never the row's own key, so no row is hidden whole). "none" is rank 2 [G·T, S], the others rank 4.
 */
const maskOf = (c: Case): tf.Tensor => {
  const S = c.past + c.T, rows = c.G * c.T
  const mb = c.mask.includes("b") ? c.B : 1, mh = c.mask.includes("h") ? c.H : 1
  const m = new Float32Array(mb * mh * rows * S)
  for (let b = 0; b < mb; b++) for (let h = 0; h < mh; h++) for (let r = 0; r < rows; r++) for (let s = 0; s < S; s++) {
    const own = c.past + (r % c.T)
    const padded = c.padding && s !== own && (s * 7 + b * 3 + h * 5) % 4 === 0
    if (s > own || padded) m[((b * mh + h) * rows + r) * S + s] = -1e9
  }
  return c.mask === "none" ? tf.tensor2d(m, [rows, S]) : tf.tensor4d(m, [mb, mh, rows, S])
}

/** O, the loss Σ O ⊙ w and dQ, dK, dV (w fixed random), with the WGSL kernels or the composite. */
const run = async (c: Case, seed: number, wgsl: boolean): Promise<Array<Float32Array>> => {
  const S = c.past + c.T, qShape = [c.B, c.H, c.G * c.T, c.hd], kShape = [c.B, c.H, S, c.hd]
  const size = (s: Array<number>) => s.reduce((p, d) => p * d, 1)
  if (!wgsl) WebGpuKernels.uninstall()
  try {
    const out = tf.tidy(() => {
      const q = tf.tensor4d(random(size(qShape), seed), qShape as [number, number, number, number])
      const k = tf.tensor4d(random(size(kShape), seed + 1), kShape as [number, number, number, number])
      const v = tf.tensor4d(random(size(kShape), seed + 2), kShape as [number, number, number, number])
      const w = tf.tensor(random(size(qShape), seed + 3), qShape), mask = maskOf(c)
      const f = (a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) => tf.sum(tf.mul(Attention.causal(a as tf.Tensor4D, b as tf.Tensor4D, d as tf.Tensor4D, mask, c.past), w))
      const { value, grads } = tf.valueAndGrads(f)([q, k, v])
      return [Attention.causal(q, k, v, mask, c.past), value, ...grads]
    })
    const values = await Promise.all(out.map((t) => t.data() as Promise<Float32Array>))
    tf.dispose(out)
    return values
  } finally {
    if (!wgsl) WebGpuKernels.install()
  }
}

const cases: Array<Case> = [
  { B: 1, H: 1, G: 1, T: 1, past: 0, hd: 1, mask: "none", padding: false },
  { B: 2, H: 3, G: 1, T: 3, past: 0, hd: 7, mask: "bh", padding: false },
  { B: 1, H: 2, G: 3, T: 17, past: 0, hd: 16, mask: "b", padding: true },
  { B: 2, H: 1, G: 3, T: 3, past: 5, hd: 65, mask: "h", padding: true },
  { B: 2, H: 2, G: 3, T: 1, past: 9, hd: 7, mask: "b", padding: true },
  { B: 1, H: 2, G: 3, T: 17, past: 6, hd: 65, mask: "bh", padding: true },
  // More keys (73) and more query rows per key (up to 99) than the 64 threads of a workgroup take at once.
  { B: 1, H: 1, G: 3, T: 33, past: 40, hd: 16, mask: "none", padding: true }
]

const label = (c: Case) => `B ${c.B}, Hkv ${c.H}, G ${c.G}, T ${c.T}, past ${c.past}, hd ${c.hd}, mask over ${c.mask}${c.padding ? " with padding" : ""}`

describe.skipIf(skip !== undefined)("WGSL causal attention on webgpu", () => {
  it("is registered for webgpu, and Attention.causal and its gradient take it", async () => {
    expect(tf.getBackend()).toBe("webgpu")
    expect(tf.getKernel(Attention.FORWARD, "webgpu")).toBeDefined()
    expect(tf.getKernel(Attention.BACKWARD, "webgpu")).toBeDefined()
    const c = cases[1]
    const profile = await tf.profile(async () => {
      const [, , dq] = await run(c, 1, true)
      return dq
    })
    expect(profile.kernelNames).toContain(Attention.FORWARD)
    expect(profile.kernelNames).toContain(Attention.BACKWARD)
  })

  cases.forEach((c, i) => {
    it(`matches the composite (O, dQ, dK, dV) on ${label(c)} within 1e-5`, async () => {
      const got = await run(c, 10 + 7 * i, true)
      const want = await run(c, 10 + 7 * i, false)
      const errors = got.map((g, j) => maxRel(g, want[j]))
      console.info(`${label(c)}: max |Δ|/(1 + |ref|) O ${errors[0].toExponential(1)}, loss ${errors[1].toExponential(1)}, dQ ${errors[2].toExponential(1)}, dK ${errors[3].toExponential(1)}, dV ${errors[4].toExponential(1)}`)
      for (const e of errors) expect(e).toBeLessThan(1e-5)
      // With one key the softmax is constant, so dQ and dK are 0 there.
      for (const g of c.past + c.T > 1 ? [got[0], ...got.slice(2)] : [got[0], got[4]]) expect(g.some((v) => v !== 0)).toBe(true)
    })
  })

  it("outputs the row log-sum-exp of the masked scores", async () => {
    const c = cases[5], S = c.past + c.T
    const [q, k, v, mask] = [random(c.B * c.H * c.G * c.T * c.hd, 3), random(c.B * c.H * S * c.hd, 4), random(c.B * c.H * S * c.hd, 5)].map((a, i) =>
      tf.tensor4d(a, i === 0 ? [c.B, c.H, c.G * c.T, c.hd] : [c.B, c.H, S, c.hd]) as tf.Tensor
    ).concat(maskOf(c))
    const [o, lse] = tf.engine().runKernel(Attention.FORWARD, { q, k, v, mask }, { past: c.past }) as Array<tf.Tensor>
    const want = tf.logSumExp(tf.add(tf.matMul(q as tf.Tensor4D, k as tf.Tensor4D, false, true), mask), -1)
    expect(lse.shape).toEqual([c.B, c.H, c.G * c.T])
    expect(maxRel(await lse.data() as Float32Array, await want.data() as Float32Array)).toBeLessThan(1e-5)
    tf.dispose([q, k, v, mask, o, lse, want])
  })

  it("leaks no tensors", async () => {
    await run(cases[2], 1, true)
    const before = tf.memory().numTensors
    await run(cases[2], 1, true)
    expect(tf.memory().numTensors).toBe(before)
  })
})
