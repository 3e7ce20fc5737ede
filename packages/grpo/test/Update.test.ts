import { Backend } from "@r1flow/backend"
import { Rng, Stage, Batch, Columns } from "@r1flow/core"
import { LogProbs, Rollout } from "@r1flow/model"
import * as tf from "@tensorflow/tfjs"
import { Effect, Schema } from "effect"
import { beforeAll, describe, expect, it } from "vitest"
import { Advantages, Metrics, Update, UpdateBatch } from "../src/index.js"
import { advantages, advantagesBatch, maxAbsDiff, rows, snapshot, tiny } from "./model.js"

const config = (c: Record<string, unknown>) => Schema.decodeUnknownSync(Update.Config)(c)
const run = <A, E>(e: Effect.Effect<A, E, import("effect").Scope.Scope>) => Effect.runPromise(Effect.scoped(e))
// ε = 1 makes Adam's first step ≈ lr · g / (|g| + 1): smooth in g, so two ways of summing g compare closely.
const smooth = { learningRate: 1, epsilon: 1, weightDecay: 0, maxGradNorm: 0 }

beforeAll(async () => {
  await Backend.init()
})

describe("Update", () => {
  it("μ = 1 is on-policy: ρ = 1, nothing clipped, KL 0 against a fresh reference, loss −mean(Â) = 0", async () => {
    const policy = tiny()
    const batch = advantagesBatch(policy, rows, advantages)
    const m = await run(Effect.gen(function*() {
      const t = yield* Update.make(policy, config({ loss: { beta: 0.04 }, optimizer: { learningRate: 1e-3 } }), Rng.make(1, "mb"))
      return yield* t.step(batch)
    }))
    expect(m[Metrics.loss]).toBeCloseTo(0, 5)
    expect(m[Metrics.clipRegion]).toBe(0)
    expect(m[Metrics.kl]).toBeCloseTo(0, 6)
    expect(m[Metrics.optimizerSteps]).toBe(1)
    expect(m[Metrics.gradNorm]).toBeGreaterThan(0)
    expect(m[Metrics.entropy]).toBeGreaterThan(1.5) // near-uniform fresh policy: ln 8 ≈ 2.08
    // The update reports its own diagnostics only; the batch's metrics are Metrics.ofBatch's.
    expect(m[Metrics.reward]).toBeUndefined()
    const b = Metrics.ofBatch(batch)
    expect(b[Metrics.reward]).toBe(0.5)
    expect(b[Metrics.completionClippedRatio]).toBe(3 / 8)
    expect([b[Metrics.completionMinLength], b[Metrics.completionMaxLength], b[Metrics.completionMeanLength]]).toEqual([1, 3, 17 / 8])
    policy.dispose()
  })

  it("μ = 1 is on-policy at temperature 0.7: the rollout's log-probs are the trainer's, ρ = 1, nothing clipped", async () => {
    const policy = tiny(3)
    const T = 0.7
    const prompts = Batch.fromData(Batch.Prompts, {
      id: Columns.makeUtf8(["a", "b"]),
      group_id: Columns.makeInt32(Int32Array.from([0, 1])),
      prompt: Columns.makeUtf8(["a", "b"]),
      prompt_ids: Columns.int32ListFromRows([[1, 2, 3], [5, 6]]),
      answer: Columns.makeUtf8(["", ""]),
      metadata: Columns.makeUtf8(["{}", "{}"])
    })
    const rollouts = await Rollout.run(policy, { groupSize: 4, maxNewTokens: 6, temperature: T, stopIds: [0], decode: (ids) => ids.join(" "), rng: Rng.make(5, "rollout") }, prompts)
    const rewards = Columns.makeFloat32(Float32Array.from({ length: rollouts.numRows }, (_, i) => i % 3 === 0 ? 1 : 0))
    const m = await run(Effect.gen(function*() {
      const scored = yield* Stage.addColumns<Batch.ScoredType>("test", rollouts, Batch.Scored, { reward: rewards })
      const batch = yield* Advantages.stage(Schema.decodeUnknownSync(Advantages.Config)({})).run(scored)
      // ρ − 1 token by token: π_θ at the sampling temperature against the recorded π_old.
      const data = LogProbs.completionBatch(batch, 0)
      const lp = tf.tidy(() => UpdateBatch.tokenLogProbs(policy, tf.tensor2d(data.ids, [data.batch, data.time], "int32"), T).logprobs.dataSync() as Float32Array)
      let worst = 0
      for (let i = 0; i < lp.length; i++) if (data.mask[i] === 1) worst = Math.max(worst, Math.abs(Math.exp(lp[i] - data.oldLogprobs[i]) - 1))
      expect(worst).toBeLessThan(1e-5)
      // The trainer computes the same ρ: with ε = 1e-4 any sampler/trainer mismatch would be clipped.
      const t = yield* Update.make(policy, config({ loss: { epsilon: 1e-4, beta: 0.04 }, optimizer: { learningRate: 1e-3 } }), Rng.make(1, "mb"))
      return yield* t.step(batch)
    }))
    expect(m[Metrics.clipLow]).toBe(0)
    expect(m[Metrics.clipHigh]).toBe(0)
    expect(m[Metrics.kl]).toBeCloseTo(0, 6)
    policy.dispose()
  })

  for (const lossType of ["grpo", "dapo", "dr_grpo"] as const) {
    it(`gradient accumulation over micro-batches gives the one-batch update (${lossType})`, async () => {
      const a = tiny(), b = tiny()
      const batch = advantagesBatch(a, rows, advantages)
      const loss = { lossType, maxCompletionLength: 4 }
      await run(Effect.gen(function*() {
        const ta = yield* Update.make(a, config({ loss, optimizer: smooth }), Rng.make(1, "mb"))
        const tb = yield* Update.make(b, config({ loss, optimizer: smooth, microBatchSize: 3 }), Rng.make(1, "mb"))
        const ma = yield* ta.step(batch)
        const mb = yield* tb.step(batch)
        expect(mb[Metrics.gradNorm]).toBeCloseTo(ma[Metrics.gradNorm], 5)
      }))
      expect(maxAbsDiff(snapshot(a), snapshot(b))).toBeLessThan(1e-5)
      a.dispose()
      b.dispose()
    })
  }

  it("μ iterations over minibatches: μ × ⌈B / minibatch⌉ optimizer steps; later passes are off-policy", async () => {
    const policy = tiny()
    const batch = advantagesBatch(policy, rows, advantages)
    const m = await run(Effect.gen(function*() {
      const t = yield* Update.make(policy, config({ iterations: 2, miniBatchSize: 4, microBatchSize: 2, loss: { epsilon: 0.01 }, optimizer: { learningRate: 0.05 } }), Rng.make(1, "mb"))
      const m = yield* t.step(batch)
      expect(t.optimizer.step()).toBe(4)
      return m
    }))
    expect(m[Metrics.optimizerSteps]).toBe(4)
    expect(m[Metrics.clipRegion]).toBeGreaterThan(0)
    policy.dispose()
  })

  it("β = 0 holds no reference; β > 0 holds a frozen copy, refreshed to the policy every refSyncSteps", async () => {
    const p0 = tiny()
    await run(Effect.gen(function*() {
      const t = yield* Update.make(p0, config({}), Rng.make(1, "mb"))
      expect(t.reference()).toBeNull()
    }))
    const policy = tiny()
    const batch = advantagesBatch(policy, rows, advantages)
    const initial = snapshot(policy)
    await run(Effect.gen(function*() {
      const t = yield* Update.make(policy, config({ loss: { beta: 0.1 }, refSyncSteps: 2, optimizer: { learningRate: 0.01 } }), Rng.make(1, "mb"))
      yield* t.step(batch)
      const afterOne = snapshot(policy)
      expect(maxAbsDiff(afterOne, initial)).toBeGreaterThan(1e-3)
      const m2 = yield* t.step(batch) // step index 1: no refresh yet, KL > 0
      expect(m2[Metrics.kl]).toBeGreaterThan(0)
      expect(maxAbsDiff(snapshot(t.reference()!), initial)).toBe(0)
      const afterTwo = snapshot(policy)
      yield* t.step(batch) // step index 2: refreshed before training
      expect(maxAbsDiff(snapshot(t.reference()!), afterTwo)).toBe(0)
    }))
    policy.dispose()
    p0.dispose()
  })

  it("masks truncated completions when asked: no tokens count, the weights do not move", async () => {
    const policy = tiny()
    const truncated = rows.map((r) => ({ ...r, finish: "length" as const }))
    const batch = advantagesBatch(policy, truncated, advantages)
    const before = snapshot(policy)
    const m = await run(Effect.gen(function*() {
      const t = yield* Update.make(policy, config({ maskTruncated: true, optimizer: { learningRate: 0.1, weightDecay: 0 } }), Rng.make(1, "mb"))
      return yield* t.step(batch)
    }))
    expect(m[Metrics.loss]).toBe(0)
    expect(Metrics.ofBatch(batch)[Metrics.completionClippedRatio]).toBe(1)
    expect(maxAbsDiff(snapshot(policy), before)).toBe(0)
    policy.dispose()
  })

  it("skips a non-finite step without touching the weights, and stops after N in a row naming the step", async () => {
    const policy = tiny()
    const good = advantagesBatch(policy, rows, advantages)
    const bad = advantagesBatch(policy, rows, Float32Array.from(advantages, (a, i) => (i === 2 ? NaN : a)))
    const err = await run(Effect.gen(function*() {
      const t = yield* Update.make(policy, config({ guard: { maxConsecutiveSkips: 2 }, optimizer: { learningRate: 0.01 } }), Rng.make(1, "mb"))
      yield* t.step(good)
      const before = snapshot(policy)
      const m = yield* t.step(bad)
      expect(m[Metrics.skippedSteps]).toBe(1)
      expect(m[Metrics.optimizerSteps]).toBe(0)
      expect(maxAbsDiff(snapshot(policy), before)).toBe(0)
      return yield* Effect.flip(t.step(bad))
    }))
    expect(err._tag).toBe("NonFiniteError")
    if (err._tag !== "NonFiniteError") return
    expect(err.step).toBe(2)
    expect(err.lastGoodStep).toBe(0)
    expect(err.message).toMatch(/^step 2: loss NaN.*last good step 0: loss=/)
    policy.dispose()
  })

  it("rejects a batch without advantages, and leaks no tensors across steps", async () => {
    const policy = tiny()
    const batch = advantagesBatch(policy, rows, advantages)
    await run(Effect.gen(function*() {
      const t = yield* Update.make(policy, config({ loss: { beta: 0.1 }, iterations: 2, microBatchSize: 3 }), Rng.make(1, "mb"))
      const err = yield* Effect.flip(t.step(batch.select(Batch.Scored.fields.map((f) => f.name) as never) as never))
      expect((err as Stage.StageError).message).toContain("\"advantage\"")
      yield* t.step(batch)
      const n = tf.memory().numTensors
      yield* t.step(batch)
      expect(tf.memory().numTensors).toBe(n)
    }))
    policy.dispose()
  })
})
