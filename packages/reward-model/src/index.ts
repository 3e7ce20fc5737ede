/**
 * @r1flow/reward-model: learned reward models (R1's final RL stage adds them for helpfulness).
 *
 * Layering: a reward model is the policy transformer (`@r1flow/model`) with a scalar head, so this is
 * an engine package (`scope:engine`), not a plugin: plugins may depend on core only. It still loads
 * through the plugin registry like any reward, because its default export is a `Reward.define(...)`
 * descriptor (`{ "plugin": "@r1flow/reward-model", "config": { "checkpoint": "runs/rm" } }`).
 *
 * `RewardModel` (head, scoring, Bradley–Terry loss, checkpoints), `Pairs` (JSONL/Parquet preference
 * pairs), `Train` (the trainer stage and held-out accuracy).
 */
import { Backend } from "@r1flow/backend"
import { Columns, Reward } from "@r1flow/core"
import { Effect, Schema } from "effect"
import * as RewardModel from "./RewardModel.js"

export * as Pairs from "./Pairs.js"
export * as RewardModel from "./RewardModel.js"
export * as Train from "./Train.js"

/** The plugin's config section. */
export const Config = Schema.Struct({
  /** A directory written by `RewardModel.save` (model.safetensors, config.json, reward_head.json). */
  checkpoint: Schema.String,
  /** Rows per forward pass (default 32). */
  batchSize: Schema.Int.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(32)))
})
/** The plugin's config section. */
export type Config = typeof Config.Type

/** Scores `(prompt_ids ⧺ completion_ids)` of each rollout with a loaded reward model (loaded on first use). */
export const scorer = (config: Config): Reward.Scorer => {
  let loaded: Promise<RewardModel.RewardModel> | undefined
  const model = () =>
    (loaded ??= Backend.init().then(() => Effect.runPromise(RewardModel.load(config.checkpoint))))
  return {
    score: async (input) => {
      const m = await model()
      const prompts = Columns.int32List(input.batch.getChild("prompt_ids") as any)
      const rows = Array.from({ length: input.rows }, (_, i) => [Columns.row(prompts, i), Columns.row(input.completionIds, i)] as const)
      return RewardModel.score(m, rows, config.batchSize)
    }
  }
}

/** The reward plugin descriptor. */
export default Reward.define({
  name: "reward-model",
  version: "0.1.0",
  description: "A learned reward model (the policy transformer with a scalar head, trained with a Bradley-Terry loss) scoring prompt + completion tokens",
  config: Config,
  make: scorer
})
