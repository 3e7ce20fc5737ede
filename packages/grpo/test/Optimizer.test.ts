import * as tf from "@tensorflow/tfjs"
import { Effect, Schema } from "effect"
import { describe, expect, it } from "vitest"
import { Backend } from "@r1flow/backend"
import { Rng } from "@r1flow/core"
import { Optimizer } from "../src/index.js"

const config = (c: Record<string, unknown> = {}) => Schema.decodeUnknownSync(Optimizer.Config)(c)

const weights = () => [
  { name: "w", variable: tf.variable(tf.tensor2d([[1, 2]])) },
  { name: "b", variable: tf.variable(tf.tensor1d([1])) }
]
const grads = () => [tf.tensor2d([[0.5, -1]]), tf.tensor1d([2])]

describe("Optimizer", () => {
  it("AdamW step 1: bias-corrected update is sign(g); decay λ·lr·θ only on rank ≥ 2 weights", () => {
    const ws = weights()
    const opt = Optimizer.make(ws, config({ learningRate: 0.1, weightDecay: 0.1, epsilon: 1e-12 }))
    opt.apply(grads())
    expect(Array.from(ws[0].variable.dataSync())).toEqual([expect.closeTo(0.99 - 0.1, 6), expect.closeTo(1.98 + 0.1, 6)])
    expect(ws[1].variable.dataSync()[0]).toBeCloseTo(0.9, 6)
    expect(opt.step()).toBe(1)
    opt.dispose()
  })

  it("scale multiplies the gradient before the moments (clipping)", () => {
    const ws = weights()
    const opt = Optimizer.make(ws, config({ learningRate: 0.1, weightDecay: 0, epsilon: 1e-12 }))
    opt.apply(grads(), 0.5)
    opt.apply([tf.tensor2d([[-0.5, 1]]), tf.tensor1d([-2])], 1)
    // step 2: m = 0.9·0.1·(g/2) − 0.1·g = −0.055 g; v = (0.999·0.001/4 + 0.001) g² → update = −0.055/0.19 / √(0.00124975/0.001999) · sign
    const u = (-0.055 / 0.19) / Math.sqrt((0.999 * 0.001 / 4 + 0.001) / (1 - 0.999 ** 2))
    expect(ws[0].variable.dataSync()[0]).toBeCloseTo(1 - 0.1 - 0.1 * u, 5)
    opt.dispose()
  })

  it("exports and imports its state exactly: two optimizers then take identical steps", async () => {
    const a = weights(), b = weights()
    const oa = Optimizer.make(a, config({ learningRate: 0.01 }))
    oa.apply(grads())
    oa.apply(grads())
    const ob = Optimizer.make(b, config({ learningRate: 0.01 }))
    b.forEach((w, i) => (w.variable as tf.Variable).assign(a[i].variable))
    const state = (o: Optimizer.AdamW) => Effect.runPromise(o.exportState())
    await Effect.runPromise(ob.importState(await state(oa)))
    expect(ob.step()).toBe(2)
    oa.apply([tf.tensor2d([[0.3, 0.1]]), tf.tensor1d([-1])])
    ob.apply([tf.tensor2d([[0.3, 0.1]]), tf.tensor1d([-1])])
    expect(Array.from(b[0].variable.dataSync())).toEqual(Array.from(a[0].variable.dataSync()))
    expect(Array.from((await state(ob)).v[1])).toEqual(Array.from((await state(oa)).v[1]))
    const bad = { ...(await state(oa)), names: ["w", "bias"] }
    const err = await Effect.runPromise(Effect.flip(ob.importState(bad)))
    expect(err.message).toContain("\"bias\"")
    oa.dispose()
    ob.dispose()
  })

  it("schedule: linear warm-up (never 0), then constant or cosine to lr · minLrRatio", () => {
    const cos = config({ learningRate: 1, warmupSteps: 4, schedule: "cosine", totalSteps: 14 })
    expect([0, 3, 4, 9, 14, 20].map((s) => Optimizer.learningRate(cos, s))).toEqual([0.2, 0.8, 1, expect.closeTo(0.5, 9), expect.closeTo(0, 9), expect.closeTo(0, 9)])
    expect(Optimizer.learningRate({ ...cos, minLrRatio: 0.1 }, 14)).toBeCloseTo(0.1, 9)
    expect(Optimizer.learningRate(config({ learningRate: 1, warmupSteps: 1 }), 100)).toBe(1)
    expect(() => Optimizer.learningRate(config({ schedule: "cosine" }), 0)).toThrow(/totalSteps/)
  })

  it("global norm and clip factor", () => {
    const n = Optimizer.globalNorm([tf.tensor1d([3, 4]), tf.tensor2d([[12]])])
    expect(n.dataSync()[0]).toBeCloseTo(13, 5)
    expect(Optimizer.clipScale(13, 1)).toBeCloseTo(1 / 13, 6)
    expect(Optimizer.clipScale(0.5, 1)).toBe(1)
    expect(Optimizer.clipScale(13, 0)).toBe(1)
  })
})

describe("Optimizer.globalNorm over many gradients", () => {
  // WebGPU binds at most 8 storage buffers per shader by default, so the norm sums in addN's of 7: bitwise one addN here.
  it("is bitwise √(one addN of the squared norms) on the cpu and wasm backends (30 gradients)", async () => {
    await Backend.init({ force: "wasm" })
    for (const backend of ["wasm", "cpu"]) {
      await tf.setBackend(backend)
      const rng = Rng.make(1, "norm")
      const gs = Array.from({ length: 30 }, (_, i) => tf.tensor1d(Float32Array.from({ length: 5 + i }, () => rng.normal() * 10 ** (i % 5))))
      const chunked = Optimizer.globalNorm(gs).dataSync()[0]
      const whole = tf.tidy(() => tf.sqrt(tf.addN(gs.map((g) => tf.sum(tf.square(g))))).dataSync()[0])
      expect(Object.is(chunked, whole), `${backend}: ${chunked} vs ${whole}`).toBe(true)
      tf.dispose(gs)
    }
  })
})
