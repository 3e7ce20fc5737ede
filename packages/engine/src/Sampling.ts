/**
 * Sampling from the current policy into a rollouts batch, and scoring it with reward plugins:
 * the pieces the GRPO, rejection-sampling and eval stages share.
 */
import { type Batch, Config as CoreConfig, Plugin, RewardStage, Rng, type Stage } from "@r1flow/core"
import type { Task } from "@r1flow/datasets"
import { Rollout } from "@r1flow/model"
import type { RecordBatch } from "apache-arrow"
import { Effect, Schema, type Scope } from "effect"
import { Run, StageRunError, type RunContext } from "./Context.js"
import * as Prompts from "./Prompts.js"
import * as Recipe from "./Recipe.js"
import * as RewardModelStage from "./stages/reward-model.js"

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

/** What a rollout needs beyond the sampling config: completions per prompt and the run stream it draws from. */
export interface Draw {
  readonly groupSize: number
  readonly stream: string
}

/**
 * The rollout stage (`Batch.Prompts` → `Batch.Rollouts`) over the current policy: `groupSize` completions
 * per prompt, stopped at the tokenizer's stop ids (`[eot]` for r1flow's own tokenizers; a Hugging Face one adds its eos) and decoded by it, drawing from the run's stream `stream`.
 */
export const rolloutStage = (ctx: RunContext, sampling: Config, draw: Draw): Effect.Effect<Stage.Stage<Batch.PromptsType, Batch.RolloutsType>, never, Rng.Rng> =>
  Effect.map(Rng.Rng, (rng) =>
    Rollout.stage(ctx.policy, {
      groupSize: draw.groupSize,
      maxNewTokens: sampling.maxNewTokens,
      temperature: sampling.temperature,
      ...(sampling.topK !== undefined ? { topK: sampling.topK } : {}),
      ...(sampling.topP !== undefined ? { topP: sampling.topP } : {}),
      stopIds: ctx.tokenizer.stopIds,
      decode: (ids: Int32Array) => ctx.tokenizer.decode(ids).text,
      rng: rng.stream(draw.stream)
    }))

/** `groupSize` completions for each of `rows`, as a rollouts batch (group ids from `firstGroup`); errors name `stage`. */
export const rollouts = (
  ctx: RunContext,
  rows: ReadonlyArray<Task.Row>,
  sampling: Config,
  draw: Draw & { readonly firstGroup: number; readonly stage: string }
): Effect.Effect<RecordBatch<Batch.RolloutsType>, StageRunError, Rng.Rng> =>
  Effect.flatMap(rolloutStage(ctx, sampling, draw), (stage) =>
    stage.run(Prompts.batch(ctx, rows, draw.firstGroup)).pipe(Effect.mapError(stageError(draw.stage))))

/** The accuracy reward one task is judged by, unless the stage names another. */
const accuracyOfKind = (kind: Recipe.SingleTask["kind"]): RewardStage.Entry["plugin"] =>
  kind === "countdown" ? "@r1flow/reward-countdown" : "@r1flow/reward-math-accuracy"

/**
 * Each default accuracy reward of the recipe's task(s) with the tasks it judges, one entry per plugin in
 * order of first use: route each with `tasks` (`RewardStage.Entry.tasks`) so a task is judged by its own.
 */
export const defaultAccuracies = (task: Recipe.Task): Array<{ readonly plugin: RewardStage.Entry["plugin"]; readonly tasks: Array<string> }> => {
  const out: Array<{ readonly plugin: string; readonly tasks: Array<string> }> = []
  for (const t of Recipe.tasksOf(task)) {
    const plugin = accuracyOfKind(t.task.kind)
    const entry = out.find((e) => e.plugin === plugin)
    if (entry === undefined) out.push({ plugin, tasks: [t.name] })
    else entry.tasks.push(t.name)
  }
  return out
}

/**
 * The accuracy reward a task is judged by, unless the stage names another. A mixture has one only when
 * all its tasks share it; otherwise this throws, and `defaultAccuracies` gives each task's.
 */
export const defaultAccuracy = (task: Recipe.Task): RewardStage.Entry["plugin"] => {
  const all = defaultAccuracies(task)
  if (all.length !== 1) throw new Error(`the mixture's tasks are judged by ${all.map((e) => `${e.plugin} (${e.tasks.join(", ")})`).join(" and ")}: use Sampling.defaultAccuracies`)
  return all[0].plugin
}

/**
 * A stage's decoded `rewards` list loaded into a reward stage (closed with the scope). Relative plugin
 * paths resolve from the recipe's directory, as the stage's own plugin path does.
 */
export const loadRewards = (stage: string, rewardList: ReadonlyArray<RewardStage.Entry>): Effect.Effect<RewardStage.RewardStage, StageRunError, Run | Scope.Scope> =>
  Effect.flatMap(Run, (ctx) =>
    Effect.flatMap(RewardModelStage.resolveRewardEntries(ctx, rewardList), (rewards) => RewardStage.loadScoped({ rewards }, { from: ctx.recipeDir }).pipe(Effect.mapError(stageError(stage)))))

/** Scores a rollouts batch. */
export const score = (stage: string, rewardStage: RewardStage.RewardStage, batch: RecordBatch<Batch.RolloutsType>) =>
  rewardStage.run(batch).pipe(Effect.mapError((e) => new StageRunError({ stage, message: `${e.stage}: ${e.message}`, cause: e })))

/**
 * Before the run, what the stage's schema could not: each reward plugin of the (decoded) `rewards` list
 * at `<where>.rewards` loads, its own `config` decodes by the plugin's schema, and no two write one column.
 */
export const checkRewards = (rewardList: ReadonlyArray<RewardStage.Entry>, where: string, from: string): Effect.Effect<void, CoreConfig.ConfigError | Plugin.PluginError> =>
  Effect.asVoid(RewardStage.check({ rewards: rewardList }, { from, prefix: where }))

/**
 * `checkRewards`, returning the reward names the stage will write (`reward_<name>` columns): each entry's
 * `name`, else its plugin's. What a pipeline check needs to know of the reward stage before it exists.
 */
export const checkRewardNames = (rewardList: ReadonlyArray<RewardStage.Entry>, where: string, from: string): Effect.Effect<Array<string>, CoreConfig.ConfigError | Plugin.PluginError> =>
  Effect.flatMap(RewardStage.check({ rewards: rewardList }, { from, prefix: where }), (config) =>
    Effect.forEach(config.rewards, (entry) =>
      entry.name !== undefined ? Effect.succeed(entry.name) : Effect.map(Plugin.load(entry.plugin, { kind: "reward", from }), (p) => p.name)))

/**
 * Before the run: the task names a stage gives (a reward entry's `tasks`, `directTasks`, each list at its
 * `path`) are tasks of the recipe, so a typo does not silently leave a reward scoring nothing but NaN.
 * `tasks`: the recipe's task names.
 */
export const checkTaskNames = (lists: ReadonlyArray<{ readonly path: string; readonly names: ReadonlyArray<string> | undefined }>, tasks: ReadonlyArray<string> | undefined): Effect.Effect<void, CoreConfig.ConfigError> => {
  const problems = tasks === undefined ? [] : lists.flatMap(({ path, names }) =>
    (names ?? []).flatMap((t, j) => (tasks.includes(t) ? [] : [`${path}[${j}]: "${t}" is not a task of this recipe (its tasks: ${tasks.join(", ")})`])))
  return problems.length === 0 ? Effect.void : Effect.fail(new CoreConfig.ConfigError({ source: "recipe", problems }))
}

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
