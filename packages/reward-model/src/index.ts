/**
 * @r1flow/reward-model: learned reward models (R1's final RL stage adds them for helpfulness).
 *
 * Layering: a reward model is the policy transformer (`@r1flow/model`) with a scalar head, so this is
 * an engine package (`scope:engine`), not a plugin: plugins may depend on core only. It still loads
 * through the plugin registry like any reward, because its default export is a `Reward.define(...)`
 * descriptor (`{ "plugin": "@r1flow/reward-model", "config": { "checkpoint": "runs/rm" } }`, or inside a
 * recipe `{ "config": { "stage": "rm" } }` for the model an earlier `reward-model` stage trained).
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

/**
 * The plugin's config section: exactly one of `checkpoint` (a directory) or `stage` (the label of an
 * earlier `reward-model` stage of the run, which the engine rewrites to that stage's checkpoint before
 * the reward is made; outside a run there is nothing to resolve it against, so `make` refuses it).
 */
export const Config = Schema.Struct({
  /** A directory written by `RewardModel.save` (model.safetensors, config.json, reward_head.json). */
  checkpoint: Schema.optionalKey(Schema.String),
  /** The label of an earlier `reward-model` stage of the run: its checkpoint, `<run>/reward-models/<stage>`. */
  stage: Schema.optionalKey(Schema.String.check(Schema.isMinLength(1))),
  /** Rows per forward pass (default 32). */
  batchSize: Schema.Int.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(32)))
}).check(Schema.makeFilter((c) =>
  (c.checkpoint === undefined) === (c.stage === undefined)
    ? { path: [], issue: `needs exactly one of "checkpoint" (a reward-model directory) or "stage" (an earlier reward-model stage of the run); got ${c.checkpoint === undefined ? "neither" : "both"}` }
    : undefined))
/** The plugin's config section. */
export type Config = typeof Config.Type

/** Scores `(prompt_ids ⧺ completion_ids)` of each rollout with a loaded reward model (loaded on first use). */
export const scorer = (config: Config): Reward.Scorer => {
  const checkpoint = config.checkpoint
  if (checkpoint === undefined) {
    throw new Error(`config.stage "${config.stage}" is resolved by the engine (a reward entry of a recipe stage after the reward-model stage "${config.stage}"); outside a run give config.checkpoint`)
  }
  let loaded: Promise<RewardModel.RewardModel> | undefined
  const model = () =>
    (loaded ??= Backend.init().then(() => Effect.runPromise(RewardModel.load(checkpoint))))
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
