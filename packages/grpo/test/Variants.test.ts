/**
 * Each objective, the TIS correction, the entropy terms and each advantage estimator in a few-step run of the
 * update on the tiny policy: finite losses, the weights move, their metrics are there, no tensor leaks. The TIS
 * weights' statistics are checked against the two models' log-probs computed here.
 */
import { Backend } from "@r1flow/backend"
import { Rng } from "@r1flow/core"
import { LogProbs } from "@r1flow/model"
import * as tf from "@tensorflow/tfjs"
import { Effect, Schema } from "effect"
import { beforeAll, describe, expect, it } from "vitest"
import { Advantages, Metrics, Update, UpdateBatch } from "../src/index.js"
import { advantages, advantagesBatch, maxAbsDiff, rows, snapshot, tiny } from "./model.js"

const config = (c: Record<string, unknown>) => Schema.decodeUnknownSync(Update.Config)(c)
const run = <A, E>(e: Effect.Effect<A, E, import("effect").Scope.Scope>) => Effect.runPromise(Effect.scoped(e))

beforeAll(async () => {
  await Backend.init()
})

/** Three updates of μ = 2 over minibatches of 4 (later passes off-policy); the metrics of each. */
const threeSteps = async (loss: Record<string, unknown>, adv: Float32Array = advantages) => {
  const policy = tiny()
  const batch = advantagesBatch(policy, rows, adv)
  const before = snapshot(policy)
  const metrics = await run(Effect.gen(function*() {
    const t = yield* Update.make(policy, config({ loss, iterations: 2, miniBatchSize: 4, microBatchSize: 2, optimizer: { learningRate: 0.02 } }), Rng.make(1, "mb"))
    const out: Array<Record<string, number>> = [yield* t.step(batch), yield* t.step(batch)]
    const n = tf.memory().numTensors
    out.push(yield* t.step(batch))
    expect(tf.memory().numTensors).toBe(n)
    return out
  }))
  const moved = maxAbsDiff(snapshot(policy), before)
  policy.dispose()
  return { metrics, moved }
}

const variants: ReadonlyArray<readonly [string, Record<string, unknown>, ReadonlyArray<string>]> = [
  ["gspo", { objective: "gspo", epsilon: 3e-4, epsilonHigh: 4e-4 }, []],
  ["cispo", { objective: "cispo", epsilon: 1, epsilonHigh: 0.28, lossType: "dapo" }, []],
  ["dual-clip", { delta: 3, epsilon: 0.01 }, [Metrics.dualClip]],
  ["tis", { tisCap: 2 }, [Metrics.tisMean, Metrics.tisMax, Metrics.tisFracCapped]],
  ["entropy bonus", { entropyCoef: 0.01, beta: 0.04 }, []],
  ["top-entropy mask", { entropyTopQuantile: 0.2 }, []]
]

describe("objectives in a few-step update", () => {
  for (const [name, loss, keys] of variants) {
    it(`${name}: finite loss, weights move, its metrics present`, async () => {
      const { metrics, moved } = await threeSteps(loss)
      for (const m of metrics) {
        expect(Number.isFinite(m[Metrics.loss])).toBe(true)
        expect(m[Metrics.optimizerSteps]).toBe(4)
        for (const k of keys) expect(Number.isFinite(m[k])).toBe(true)
      }
      expect(moved).toBeGreaterThan(1e-3)
      // a key nobody asked for stays out of the line
      for (const k of [Metrics.dualClip, Metrics.tisMean].filter((k) => !keys.includes(k))) expect(metrics[0][k]).toBeUndefined()
    })
  }
})

describe("advantage estimators in a few-step update", () => {
  const rewards = Float32Array.from(rows, (r) => r.reward)
  const groups = Int32Array.from(rows, (r) => r.group)
  for (const estimator of ["rloo", "reinforce++", "reinforce++_baseline"] as const) {
    it(`${estimator}: finite loss, weights move`, async () => {
      const adv = Advantages.compute(rewards, groups, Schema.decodeUnknownSync(Advantages.Config)({ estimator })).advantages
      expect(adv.some((a) => a !== 0)).toBe(true)
      const { metrics, moved } = await threeSteps({}, adv)
      for (const m of metrics) expect(Number.isFinite(m[Metrics.loss])).toBe(true)
      expect(moved).toBeGreaterThan(1e-3)
    })
  }
})

describe("truncated importance sampling", () => {
  it("π_old is the trainer's own pass (nothing clipped at μ = 1 although the sampler differs); w = min(exp(old − sampler), C)", async () => {
    const policy = tiny(1), sampler = tiny(2)
    const batch = advantagesBatch(sampler, rows, advantages) // the sampler's log-probs, another model's
    const data = LogProbs.completionBatch(batch, 0)
    const trainer = tf.tidy(() => UpdateBatch.tokenLogProbs(policy, tf.tensor2d(data.ids, [data.batch, data.time], "int32"), 1).logprobs.dataSync() as Float32Array)
    const C = 1
    let n = 0, sum = 0, max = 0, capped = 0
    for (let i = 0; i < trainer.length; i++) {
      if (data.mask[i] === 0) continue
      const ratio = Math.exp(trainer[i] - data.oldLogprobs[i])
      n++
      sum += Math.min(ratio, C)
      max = Math.max(max, Math.min(ratio, C))
      if (ratio > C) capped++
    }
    const step = (loss: Record<string, unknown>) => run(Effect.gen(function*() {
      const t = yield* Update.make(tiny(1), config({ loss: { epsilon: 1e-4, ...loss }, optimizer: { learningRate: 1e-3 } }), Rng.make(1, "mb"))
      const m = yield* t.step(batch)
      t.policy.dispose()
      return m
    }))
    const m = await step({ tisCap: C })
    expect(m[Metrics.tisMean]).toBeCloseTo(sum / n, 5)
    expect(m[Metrics.tisMax]).toBeCloseTo(max, 5)
    expect(m[Metrics.tisFracCapped]).toBeCloseTo(capped / n, 6)
    expect(capped / n).toBeGreaterThan(0)
    expect(capped / n).toBeLessThan(1)
    expect(m[Metrics.clipRegion]).toBe(0)
    // without TIS the ratio is against the other model's log-probs: with ε = 1e-4 nearly every token is clipped
    expect((await step({}))[Metrics.clipRegion]).toBeGreaterThan(0.3)
    policy.dispose()
    sampler.dispose()
  })
})
