import { Backend } from "@r1flow/backend"
import { Batch, Columns, Pipeline, RewardStage, Rng, Stage } from "@r1flow/core"
import { Rollout } from "@r1flow/model"
import { Field, Float32, Schema as ArrowSchema } from "apache-arrow"
import { Effect, Schema, type Scope } from "effect"
import { beforeAll, describe, expect, it } from "vitest"
import { Advantages, Metrics, Step, Update } from "../src/index.js"
import { tiny } from "./model.js"

const run = <A, E>(e: Effect.Effect<A, E, Scope.Scope>) => Effect.runPromise(Effect.scoped(e))

beforeAll(async () => {
  await Backend.init()
})

/** Two prompts per attempt, group ids numbered per attempt (as the engine numbers them). */
const prompts = (calls: Array<number>) => (attempt: number) => {
  calls.push(attempt)
  const groups = [2 * attempt, 2 * attempt + 1]
  return Batch.fromData(Batch.Prompts, {
    id: Columns.makeUtf8(groups.map((g) => `q${g}`)),
    group_id: Columns.makeInt32(Int32Array.from(groups)),
    prompt: Columns.makeUtf8(groups.map((g) => `q${g}`)),
    prompt_ids: Columns.int32ListFromRows(groups.map((g) => [1, 2 + (g % 4)])),
    answer: Columns.makeUtf8(groups.map(() => "")),
    metadata: Columns.makeUtf8(groups.map(() => "{}")),
  })
}

/** Odd groups score their rows 0, 1, 0, 1 (informative); even groups score 1 everywhere (zero variance). */
const parity = RewardStage.make([{
  reward: { name: "parity", version: "1.0.0", score: (input) => Float32Array.from(input.groupIds, (g, i) => (g % 2 === 1 ? i % 2 : 1)) }
}])

const parts = (policy = tiny()) =>
  Effect.gen(function*() {
    const trainer = yield* Update.make(policy, Schema.decodeUnknownSync(Update.Config)({ loss: { beta: 0.04 } }), Rng.make(1, "mb"))
    return {
      rollout: Rollout.stage(policy, { groupSize: 4, maxNewTokens: 3, temperature: 1, stopIds: [0], decode: (ids) => Array.from(ids).join(" "), rng: Rng.make(1, "rollout") }),
      rewards: parity,
      afterRollout: [],
      afterRewards: [],
      afterAdvantages: [],
      advantages: Schema.decodeUnknownSync(Advantages.Config)({}),
      dynamicSampling: undefined,
      trainer
    } satisfies Step.Parts
  })

/** A reward shaper: `reward` + `bonus` (a user stage rewriting a column through `Stage.replaceColumns`). */
const bonus = (amount: number) =>
  Stage.make({
    name: "bonus",
    input: Batch.Scored,
    output: Batch.Scored,
    transform: (b) => Stage.replaceColumns("bonus", b, { reward: Columns.makeFloat32(Float32Array.from(Columns.float32Values(b.getChild("reward")!), (r) => r + amount)) })
  })

describe("Step", () => {
  it("rollout → rewards → advantages → update: the batch trained on and its metrics, each key once, in the logged order", async () => {
    const calls: Array<number> = []
    const { batch, metrics } = await run(Effect.flatMap(Effect.flatMap(parts(), Step.make), (step) => step.run(prompts(calls))))
    expect(calls).toEqual([0])
    expect(batch.numRows).toBe(8)
    expect(batch.schema.fields.map((f) => f.name).slice(-3)).toEqual(["reward_parity", "reward", "advantage"])
    expect(Object.keys(metrics)).toEqual([
      "reward", "reward_std", "frac_reward_zero_std", "num_nan_rewards", "rewards/parity/mean", "rewards/parity/std",
      "completions/mean_length", "completions/min_length", "completions/max_length", "completions/clipped_ratio", "num_tokens",
      "rewards/parity/frac_nan", "reward_frac_nan", "rewards/parity/failed_calls", "rewards/parity/failed_rows",
      "loss", "grad_norm", "learning_rate", "kl", "entropy", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean",
      "optimizer_steps", "skipped_steps", "perf/throughput"
    ])
    // group 0 all 1, group 1 {0, 1, 0, 1}: mean 0.75; one of two groups has zero variance.
    expect([metrics.reward, metrics["rewards/parity/mean"], metrics.frac_reward_zero_std]).toEqual([0.75, 0.75, 0.5])
    expect(metrics.num_tokens).toBe(Columns.int32Values(batch.getChild("completion_length")!).reduce((a, b) => a + b, 0))
  })

  it("user stages run at their points: a reward shaper's reward is what the advantages and the metrics see", async () => {
    const seen: Array<number> = []
    const watch = Stage.make({ name: "watch", input: Batch.Advantages, output: Batch.Advantages, transform: (b) => Effect.sync(() => { seen.push(b.numRows); return b }) })
    const { batch, metrics } = await run(Effect.gen(function*() {
      const step = yield* Step.make({ ...(yield* parts()), afterRewards: [bonus(2)], afterAdvantages: [watch] })
      return yield* step.run(prompts([]))
    }))
    expect(seen).toEqual([8])
    expect(metrics.reward).toBe(2.75)
    expect(metrics["rewards/parity/mean"]).toBe(0.75) // the shaper rewrote the total, not the reward's own column
    expect(Columns.float32Values(batch.getChild("reward")!)[0]).toBe(3)
  })

  it("a stage that reads a column nothing before it writes is refused when the step is built, before any prompt is drawn", async () => {
    const calls: Array<number> = []
    const needs = new ArrowSchema([...Batch.Rollouts.fields, new Field("reward_judge", new Float32(), true)])
    const early = Stage.make({ name: "needs-judge", input: needs, output: needs, transform: Effect.succeed })
    const err = await run(Effect.gen(function*() {
      const p = yield* parts()
      const e = yield* Effect.flip(Effect.flatMap(Step.make({ ...p, afterRewards: [early] }), (step) => step.run(prompts(calls))))
      // The same check on signatures alone, as the engine runs it before a run starts.
      const before = yield* Effect.flip(Step.check({ ...p, afterRewards: [early] }))
      expect(before.message).toBe(e.message)
      return e
    }))
    expect(calls).toEqual([])
    expect((err as Pipeline.PipelineError)._tag).toBe("PipelineError")
    expect(err.message).toBe('stage "needs-judge" needs what stage "rewards" does not give: missing column "reward_judge" (expected Float32)')
  })

  it("dynamic sampling draws again with fresh group ids until the batch is full, and counts the dropped groups last", async () => {
    const calls: Array<number> = []
    const { batch, metrics } = await run(Effect.gen(function*() {
      const step = yield* Step.make({ ...(yield* parts()), dynamicSampling: { targetGroups: 2, maxDraws: 3 } })
      return yield* step.run(prompts(calls))
    }))
    expect(calls).toEqual([0, 1])
    expect([...new Set(Columns.int32Values(batch.getChild("group_id")!))]).toEqual([1, 3])
    expect(metrics.frac_reward_zero_std).toBe(0)
    expect(Object.keys(metrics).at(-1)).toBe(Metrics.droppedGroups)
    expect(metrics[Metrics.droppedGroups]).toBe(2)
  })
})
