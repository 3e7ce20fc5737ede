/**
 * Sampling from the current policy into a rollouts batch, and scoring it with reward plugins:
 * the pieces the GRPO, rejection-sampling and eval stages share.
 */
import { type Batch, Config as CoreConfig, Plugin, RewardStage, type Stage } from "@r1flow/core"
import type { Task } from "@r1flow/datasets"
import { Rollout } from "@r1flow/model"
import type { RecordBatch } from "apache-arrow"
import { Effect, Schema, type Scope } from "effect"
import { Run, StageRunError, type RunContext } from "./Context.js"
import * as Prompts from "./Prompts.js"
import * as Recipe from "./Recipe.js"

/** How completions are sampled. */
export const Config = Schema.Struct({
  maxNewTokens: Schema.Int.check(Schema.isGreaterThan(0)),
  /** 0 is greedy. */
  temperature: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0)),
  topK: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThan(0))),
  topP: Schema.optionalKey(Schema.Finite.check(Schema.isBetween({ minimum: 0, maximum: 1 })))
})
/** How completions are sampled. */
export type Config = typeof Config.Type

const stageError = (stage: string) => (e: { readonly message: string }) => new StageRunError({ stage, message: e.message, cause: e })

/**
 * The rollout stage (`Batch.Prompts` → `Batch.Rollouts`) over the current policy: `groupSize` completions
 * per prompt, stopped at the tokenizer's end of text and decoded by it, drawing from the run's stream `stream`.
 */
export const rolloutStage = (
  ctx: RunContext,
  options: Config & { readonly groupSize: number; readonly stream: string }
): Stage.Stage<Batch.PromptsType, Batch.RolloutsType> =>
  Rollout.stage(ctx.policy, {
    groupSize: options.groupSize,
    maxNewTokens: options.maxNewTokens,
    temperature: options.temperature,
    ...(options.topK !== undefined ? { topK: options.topK } : {}),
    ...(options.topP !== undefined ? { topP: options.topP } : {}),
    stopIds: [ctx.tokenizer.specialIds.eot],
    decode: (ids: Int32Array) => ctx.tokenizer.decode(ids).text,
    rng: ctx.rng.stream(options.stream)
  })

/** `groupSize` completions for each of `rows`, as a rollouts batch (group ids from `firstGroup`). */
export const rollouts = (
  ctx: RunContext,
  rows: ReadonlyArray<Task.Row>,
  options: Config & { readonly groupSize: number; readonly stream: string; readonly firstGroup?: number; readonly stage: string }
): Effect.Effect<RecordBatch<Batch.RolloutsType>, StageRunError> =>
  rolloutStage(ctx, options).run(Prompts.batch(ctx, rows, options.firstGroup ?? 0)).pipe(Effect.mapError(stageError(options.stage)))

/** The accuracy reward a task is judged by, unless the stage names another. */
export const defaultAccuracy = (task: Recipe.Task): RewardStage.Entry["plugin"] =>
  task.kind === "countdown" ? "@r1flow/reward-countdown" : "@r1flow/reward-math-accuracy"

/** Loads reward plugins into a reward stage (closed with the scope). */
export const rewards = (stage: string, config: RewardStage.Config, from: string): Effect.Effect<RewardStage.RewardStage, StageRunError, Scope.Scope> =>
  RewardStage.loadScoped(config, { from }).pipe(Effect.mapError(stageError(stage)))

/** Scores a rollouts batch. */
export const score = (stage: string, rewardStage: RewardStage.RewardStage, batch: RecordBatch<Batch.RolloutsType>) =>
  rewardStage.run(batch).pipe(Effect.mapError((e) => new StageRunError({ stage, message: `${e.stage}: ${e.message}`, cause: e })))

/** Rewards decoded against the core schema (defaults filled in, unknown keys refused), with paths for errors. */
export const decodeRewards = (raw: unknown, where: string) =>
  CoreConfig.decode(RewardStage.Config, raw, { source: where }).pipe(Effect.mapError((e) => new StageRunError({ stage: where, message: e.message })))

/**
 * A stage's `rewards` list, decoded and loaded into a reward stage (closed with the scope). Relative
 * plugin paths resolve from the recipe's directory, as the stage's own plugin path does.
 */
export const loadRewards = (stage: string, rewardList: ReadonlyArray<unknown>) =>
  Effect.gen(function*() {
    const ctx = yield* Run
    const config = yield* decodeRewards({ rewards: rewardList }, `${stage}.rewards`)
    return yield* rewards(stage, config, ctx.recipeDir)
  })

/** Checks a stage's `rewards` list (at `<where>.rewards`) before the run: entries, plugins and their configs. */
export const checkRewards = (rewardList: ReadonlyArray<unknown>, where: string, from: string): Effect.Effect<void, CoreConfig.ConfigError | Plugin.PluginError> =>
  Effect.asVoid(RewardStage.check({ rewards: rewardList }, { from, prefix: where }))

/**
 * `checkRewards`, returning the reward names the stage will write (`reward_<name>` columns): each entry's
 * `name`, else its plugin's. What a pipeline check needs to know of the reward stage before it exists.
 */
export const checkRewardNames = (rewardList: ReadonlyArray<unknown>, where: string, from: string): Effect.Effect<Array<string>, CoreConfig.ConfigError | Plugin.PluginError> =>
  Effect.flatMap(RewardStage.check({ rewards: rewardList }, { from, prefix: where }), (config) =>
    Effect.forEach(config.rewards, (entry) =>
      entry.name !== undefined ? Effect.succeed(entry.name) : Effect.map(Plugin.load(entry.plugin, { kind: "reward", from }), (p) => p.name)))

/** Checks an eval's `accuracy` reward (at `<where>.accuracy`): that the plugin loads and its `config` decodes. */
export const checkAccuracy = (
  accuracy: { readonly plugin: string; readonly config?: unknown } | undefined,
  where: string,
  from: string
): Effect.Effect<void, CoreConfig.ConfigError | Plugin.PluginError> =>
  accuracy === undefined
    ? Effect.void
    : Plugin.load(accuracy.plugin, { kind: "reward", from }).pipe(
      Effect.mapError((e) => new Plugin.PluginError({ plugin: e.plugin, message: `${where}.accuracy.plugin: ${e.message}` })),
      Effect.flatMap((plugin) => Plugin.decodeConfig(plugin, accuracy.config, `${where}.accuracy.config`)),
      Effect.asVoid
    )
