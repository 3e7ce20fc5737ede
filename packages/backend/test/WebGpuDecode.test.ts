// The WGSL decode kernels on the webgpu backend (forced, so lavapipe serves in CI): R1DecodeAttention against
// `Decode.composite` (tfjs ops, also on webgpu) on odd shapes, and R1CacheWrite checked by reading the cache
// back after each write. Skips, printing why, when no adapter can be had.
import * as tf from "@tensorflow/tfjs"
import { describe, expect, it } from "vitest"
import * as WebGpuTest from "./support/webgpu.js"

const skip = await WebGpuTest.open("WGSL decode tests")
// Dynamic, as Backend loads it (the boundary rule forbids a static import of a lazily loaded library).
const { Decode } = await import("@r1flow/kernels")
const { random, maxRel } = WebGpuTest

/** Q query rows per kv head, P prompts of Sp keys, S attended own keys of C slots, each row's prompt. */
interface Case {
  readonly B: number
  readonly H: number
  readonly Q: number
  readonly hd: number
  readonly P: number
  readonly Sp: number
  readonly S: number
  readonly C: number
  readonly promptOf: ReadonlyArray<number>
}

// −1e9 on about a quarter of the entries, never the last of a row (so no row is hidden whole).
const bias = (rows: number, w: number, seed: number): Float32Array =>
  random(rows * w, seed).map((r, i) => (r < -0.5 && i % w !== w - 1 ? -1e9 : 0))

const inputs = (c: Case, seed: number) => {
  const { B, H, Q, hd, P, Sp, S, C } = c
  // Slots past S hold large values: read by mistake, they would show.
  const own = (s: number) => random(B * H * C * hd, s).map((v, i) => (Math.floor(i / hd) % C < S ? v : 1e3))
  return {
    q: tf.tensor4d(random(B * H * Q * hd, seed), [B, H, Q, hd]),
    promptK: tf.tensor4d(random(P * H * Sp * hd, seed + 1), [P, H, Sp, hd]),
    promptV: tf.tensor4d(random(P * H * Sp * hd, seed + 2), [P, H, Sp, hd]),
    promptOf: tf.tensor1d(c.promptOf as Array<number>, "int32"),
    promptBias: tf.tensor4d(Sp === 0 ? [] : bias(B, Sp, seed + 3).map((v, i) => (i % Sp === 0 ? 0 : v)), [B, 1, 1, Sp]),
    k: tf.tensor4d(own(seed + 4), [B, H, C, hd]),
    v: tf.tensor4d(own(seed + 5), [B, H, C, hd]),
    mask: tf.tensor4d(bias(B * Q, S, seed + 6), [B, 1, Q, S])
  }
}

const cases: Array<Case> = [
  { B: 1, H: 1, Q: 1, hd: 1, P: 1, Sp: 1, S: 1, C: 1, promptOf: [0] },
  { B: 3, H: 2, Q: 3, hd: 7, P: 2, Sp: 5, S: 4, C: 9, promptOf: [1, 0, 1] },
  // More keys (73) than a workgroup's 64 threads take at once, hd above them, prompts out of order.
  { B: 4, H: 1, Q: 1, hd: 65, P: 3, Sp: 70, S: 3, C: 5, promptOf: [2, 0, 1, 0] },
  { B: 2, H: 3, Q: 2, hd: 16, P: 2, Sp: 3, S: 66, C: 70, promptOf: [1, 1] },
  { B: 2, H: 2, Q: 1, hd: 7, P: 1, Sp: 0, S: 5, C: 6, promptOf: [0, 0] }
]

const label = (c: Case) => `B ${c.B}, Hkv ${c.H}, Q ${c.Q}, hd ${c.hd}, P ${c.P}, Sp ${c.Sp}, S ${c.S}, C ${c.C}, promptOf [${c.promptOf.join(", ")}]`

describe.skipIf(skip !== undefined)("WGSL decode kernels on webgpu", () => {
  it("are registered for webgpu, so Decode.available() and Decode.attend takes the kernel", async () => {
    expect(tf.getBackend()).toBe("webgpu")
    expect(Decode.available()).toBe(true)
    expect(tf.getKernel(Decode.WRITE_KERNEL, "webgpu")).toBeDefined()
    const x = inputs(cases[1], 1)
    const profile = await tf.profile(() => Decode.attend(x))
    expect(profile.kernelNames).toContain(Decode.KERNEL)
    tf.dispose(Object.values(x))
  })

  cases.forEach((c, i) => {
    it(`attention matches the composite on ${label(c)} within 1e-5, leaking no tensors`, async () => {
      const before = tf.memory().numTensors
      const x = inputs(c, 10 + 11 * i)
      const [got, want] = [Decode.attend(x), Decode.composite(x)]
      const [a, b] = await Promise.all([got.data(), want.data()]) as Array<Float32Array>
      const e = maxRel(a, b)
      console.info(`${label(c)}: max |Δ|/(1 + |ref|) ${e.toExponential(1)}`)
      expect(e).toBeLessThan(1e-5)
      expect(a.some((v) => v !== 0)).toBe(true)
      tf.dispose([got, want, ...Object.values(x)])
      expect(tf.memory().numTensors).toBe(before)
    })
  })

  it("writes the cache in place at several offsets (read back after each write) and leaks no tensors", async () => {
    const [B, H, C, hd] = [2, 3, 7, 5]
    const want = random(B * H * C * hd, 7)
    const before = tf.memory().numTensors
    const cache = tf.tensor4d(want, [B, H, C, hd]) // host values: the first write uploads them
    for (const [at, T, seed] of [[0, 3, 8], [3, 1, 9], [5, 2, 10], [1, 4, 11]]) {
      const x = random(B * H * T * hd, seed)
      const xt = tf.tensor4d(x, [B, H, T, hd])
      Decode.write(cache, xt, at)
      xt.dispose() // before the queue runs: the write holds its buffer
      for (let i = 0; i < B * H; i++) want.set(x.subarray(i * T * hd, (i + 1) * T * hd), (i * C + at) * hd)
      expect(Array.from(await cache.data())).toEqual(Array.from(want))
    }
    // The cache stays an ordinary tensor: ops read what was written.
    const sum = tf.sum(cache)
    expect((await sum.data())[0]).toBeCloseTo(want.reduce((s, v) => s + v, 0), 3)
    tf.dispose([cache, sum])
    expect(tf.memory().numTensors).toBe(before)
  })

  it("attends over the filled slots of a cache written in place", async () => {
    const c = cases[1]
    const x = inputs({ ...c, C: c.S }, 5)
    const k = tf.zeros([c.B, c.H, c.C, c.hd]) as tf.Tensor4D, v = tf.zeros([c.B, c.H, c.C, c.hd]) as tf.Tensor4D
    Decode.write(k, x.k, 0)
    Decode.write(v, x.v, 0)
    const [got, want] = [Decode.attend({ ...x, k, v }), Decode.composite(x)]
    expect(maxRel(await got.data() as Float32Array, await want.data() as Float32Array)).toBeLessThan(1e-5)
    tf.dispose([got, want, k, v, ...Object.values(x)])
  })
})
