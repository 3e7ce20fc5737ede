/**
 * `grpo`: the R1 reinforcement-learning stage. The step itself (rollout → rewards → dynamic sampling →
 * advantages → update, and its metrics) is `@r1flow/grpo`'s `Step`; this stage gives it its parts (the
 * rollout over the run's policy and tokenizer, the reward plugins, the user's stages, the trainer), resumes
 * the trainer, and runs the schedule: draw prompts at the data cursor, step, record, write the step's
 * rollouts to `rollouts/step-NNNNNN.arrow`, evaluate every `evalEvery` steps, checkpoint. Over a task
 * mixture the prompts are drawn by the tasks' weights (`Prompts.taskSampler`) and each step also records
 * its reward metrics per task (`GrpoMetrics.ofTasks`: `task/<name>/…`); a single task's metrics are as ever.
 */
import { Batch, Config as CoreConfig, Metrics, RewardStage, Rng, UserStage } from "@r1flow/core"
import { Advantages, DynamicSampling, Metrics as GrpoMetrics, Step, Update } from "@r1flow/grpo"
import { Rollout, Transformer } from "@r1flow/model"
import type { RecordBatch } from "apache-arrow"
import { Effect, Option, Schema, Struct } from "effect"
import { join } from "node:path"
import * as Compute from "../Compute.js"
import { Run, splitPerf, StageRunError, type Resumed, type RunContext } from "../Context.js"
import * as Distributed from "../Distributed.js"
import * as Evaluate from "../Evaluate.js"
import * as Progress from "../Progress.js"
import * as Prompts from "../Prompts.js"
import * as Recipe from "../Recipe.js"
import * as RecipeStage from "../RecipeStage.js"
import * as RunDir from "../RunDir.js"
import * as Sampling from "../Sampling.js"
import * as RewardModelStage from "./reward-model.js"

/**
 * The stage's `update` section: `Update.Config` less what the run supplies. `padId` is the tokenizer's
 * end of text; a recipe that sets it is refused, naming why, where it used to win over the tokenizer's.
 */
export const UpdateSection = Update.Config.mapFields((fields) => ({
  ...Struct.omit(fields, ["padId"]),
  padId: RecipeStage.setByRun("the tokenizer's end-of-text id")
}))

/**
 * GRPO stage config, decoded whole (its `update` and `rewards` sections included) before any stage of the
 * run starts. Opaque by design, and decoded by their plugin's own schema in `check`: each reward's and
 * user stage's `config`, and the eval's accuracy reward's.
 */
export const Config = Schema.Struct({
  steps: Schema.Int.check(Schema.isGreaterThan(0)),
  /** Prompts (groups) per step. */
  promptsPerStep: Schema.Int.check(Schema.isGreaterThan(0)),
  /** G: completions per prompt. */
  groupSize: Schema.Int.check(Schema.isGreaterThan(1)),
  sampling: Sampling.Config,
  /** Reward plugins with weights and failure policy (see `RewardStage.Entry`). */
  rewards: Schema.Array(RewardStage.Entry).check(Schema.isMinLength(1)),
  advantages: Advantages.Config.pipe(Schema.withDecodingDefaultKey(Effect.succeed({}))),
  update: UpdateSection.pipe(Schema.withDecodingDefaultKey(Effect.succeed({}))),
  /** DAPO dynamic sampling: keep drawing until `targetGroups` groups have reward variance. */
  dynamicSampling: Schema.optionalKey(DynamicSampling.Config),
  /** User stages (`UserStage`) after the rollout, e.g. a filter; they run on every draw, before the rewards. */
  afterRollout: Schema.optionalKey(Schema.Array(UserStage.Entry)),
  /** User stages after the rewards, e.g. a reward shaper; dynamic sampling judges what they leave. */
  afterRewards: Schema.optionalKey(Schema.Array(UserStage.Entry)),
  /** User stages after the advantages, e.g. an advantage estimator; the update trains on what they leave. */
  afterAdvantages: Schema.optionalKey(Schema.Array(UserStage.Entry)),
  evalEvery: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(0))),
  eval: Schema.optionalKey(Evaluate.Config),
  saveRollouts: Schema.Boolean.pipe(Schema.withDecodingDefaultKey(Effect.succeed(true))),
  logEvery: Schema.Int.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(5))),
  /**
   * Draw by prompt group, each from its own seed, in this process (`workers: 0`, no `nats`) or on rollout
   * workers over NATS (`Distributed`). Absent: the whole batch from one stream, as always.
   */
  distributed: Schema.optionalKey(Distributed.Config)
})
/** GRPO stage config. */
export type Config = typeof Config.Type

/** What the run supplies to the update: the tokenizer's `padId`. */
export interface UpdateRun {
  readonly padId: number
}

const fail = (stage: string) => (e: { readonly message: string }) => new StageRunError({ stage, message: e.message, cause: e })

/**
 * The policy update's config: the stage's decoded `update` section, with what follows from the rest of the
 * stage where the section leaves it out: dr_grpo's constant L (`loss.maxCompletionLength`) =
 * `sampling.maxNewTokens`, the longest completion the sampler writes (Dr. GRPO's generation budget), and the
 * schedule's `totalSteps` = steps × iterations; and the run's `padId` (the section cannot hold one). The
 * temperature is not here: it comes with each rollouts batch (`Batch.logprobTemperature`).
 */
export const updateConfig = (config: Config, run: UpdateRun): Update.Config => {
  const update = config.update
  return {
    ...update,
    loss: { ...update.loss, maxCompletionLength: update.loss.maxCompletionLength ?? config.sampling.maxNewTokens },
    optimizer: { ...update.optimizer, totalSteps: update.optimizer.totalSteps ?? config.steps * update.iterations },
    padId: run.padId
  }
}

/** The user stages of `config`, loaded from `from` (errors at `<where>.afterRollout[i]…`). */
const userStages = (config: Config, where: string, from: string) =>
  Effect.all({
    afterRollout: UserStage.loadAll(config.afterRollout, { from, where: `${where}.afterRollout` }),
    afterRewards: UserStage.loadAll(config.afterRewards, { from, where: `${where}.afterRewards` }),
    afterAdvantages: UserStage.loadAll(config.afterAdvantages, { from, where: `${where}.afterAdvantages` })
  })

/**
 * The step's pipeline, from the prompts to the update, checked on its stages' schemas before the run: the
 * rollout's, the reward stage's (a `reward_<name>` column per reward) and the user stages' as they load.
 */
const checkPipeline = (config: Config, rewardNames: ReadonlyArray<string>, { where, from }: RecipeStage.CheckContext) =>
  Effect.flatMap(userStages(config, where, from), (user) =>
    Step.check({
      rollout: Rollout.signature,
      rewards: { name: "rewards", input: Batch.Rollouts, output: Batch.scoredWith(rewardNames) },
      ...user,
      advantages: config.advantages
    }).pipe(Effect.mapError((e) => new CoreConfig.ConfigError({ source: "pipeline", problems: e.message.split("\n").map((line) => `${where}: ${line}`) }))))

/** Before the run, what the schema cannot see: the reward plugins and their configs and tasks, the eval's accuracy reward, and the pipeline. */
const check = (config: Config, at: RecipeStage.CheckContext) =>
  Effect.gen(function*() {
    const rewardNames = yield* Sampling.checkRewardNames(config.rewards, at.where, at.from)
    yield* Sampling.checkTaskNames(config.rewards.map((e, k) => ({ path: `${at.where}.rewards[${k}].tasks`, names: e.tasks })), at.tasks)
    yield* RewardModelStage.checkStageRefs(config.rewards, (k) => `${at.where}.rewards[${k}]`, at)
    yield* Sampling.checkAccuracy(config.eval?.accuracy, `${at.where}.eval`, at.from)
    yield* checkPipeline(config, rewardNames, at)
    if ((config.distributed?.maxStaleness ?? 0) >= 1 && config.update.loss.tisCap === undefined) {
      return yield* new CoreConfig.ConfigError({
        source: "distributed",
        problems: [`${at.where}.distributed.maxStaleness: ${config.distributed?.maxStaleness} lets samples lag the policy, which needs the importance-sampling correction: set ${at.where}.update.loss.tisCap (e.g. 2, as TRL and verl do)`]
      })
    }
  })

/** A step's prompt groups, one batch per row, by the step batch they make (`promptSource`), and the next step's. */
interface Groups {
  readonly of: Distributed.GroupsOf
  readonly next: () => ReadonlyArray<Distributed.Group>
}

/**
 * The per-group draw (`Distributed`): here, or over NATS with the run's own nats-server (store in
 * `<run>/nats`) unless `nats` names one, and `workers` local worker processes (logs in `<run>/nats/logs`).
 */
const distributedDraw = (label: string, config: Config, dist: Distributed.Config, ctx: RunContext, parts: Distributed.DrawParts, groups: Groups, tally: Distributed.Staleness) =>
  Effect.gen(function*() {
    const seedOf = (index: number) => Distributed.groupSeed(ctx.recipe.seed, label, index)
    if (dist.nats === undefined && dist.workers === 0) return Distributed.localDraw(groups.of, seedOf, Distributed.drawGroup(ctx, parts), tally)
    const url = dist.nats ?? (yield* Distributed.localServer(label, join(ctx.dir.root, "nats"))).url
    const manifest = (yield* RunDir.readJson(ctx.dir.manifest).pipe(Effect.mapError(fail(label)))) as { readonly compute?: Compute.Compute }
    const compute = manifest.compute !== undefined ? Compute.describe(manifest.compute) : "unknown"
    const fp = yield* Distributed.fingerprintOf(config, ctx.recipeDir, `${ctx.tokenizer.name} ${ctx.tokenizer.vocabSize}`, compute).pipe(Effect.mapError(fail(label)))
    const id = Distributed.runId(ctx.recipe.name, label)
    const trainer = yield* Distributed.connectTrainer(label, url, id, fp, dist.ackWaitMs, ctx.policy.config)
    const workers = yield* Distributed.startLocalWorkers(dist.workers, { nats: url, runDir: ctx.dir.root, stage: label }, join(ctx.dir.root, "nats", "logs"))
    ctx.log(`distributed: run ${id} on ${url}, ${dist.workers} local worker(s), maxStaleness ${dist.maxStaleness}`)
    return Distributed.remoteDraw({ trainer, config: dist, ctx, groupsOf: groups.of, seedOf, next: groups.next, tally, alive: Distributed.anyAlive(label, workers) })
  })

/** The step over this run's parts: rewards, user stages, trainer, then the rollout (its stream opens after the trainer's, as it always has). */
const makeStep = (label: string, config: Config, ctx: RunContext, groups: Groups, tally: Distributed.Staleness) =>
  Effect.gen(function*() {
    const rng = yield* Rng.Rng
    const rewards = yield* Sampling.loadRewards(label, config.rewards)
    const user = yield* userStages(config, label, ctx.recipeDir).pipe(Effect.mapError(fail(label)))
    const update = updateConfig(config, { padId: ctx.tokenizer.specialIds.eot })
    const trainer = yield* Update.make(ctx.policy, update, rng.stream(`${label}/minibatch`)).pipe(Effect.mapError(fail(label)))
    const rollout = yield* Sampling.rolloutStage(ctx, config.sampling, { groupSize: config.groupSize, stream: `${label}/rollout` })
    const dist = config.distributed
    const draw = dist === undefined
      ? undefined
      : yield* distributedDraw(label, config, dist, ctx, { sampling: config.sampling, groupSize: config.groupSize, rewards, afterRollout: user.afterRollout, afterRewards: user.afterRewards }, groups, tally)
    const step = yield* Step.make({ rollout, rewards, ...user, advantages: config.advantages, dynamicSampling: config.dynamicSampling, trainer, ...(draw !== undefined ? { draw } : {}) }).pipe(
      Effect.mapError(fail(label))
    )
    return { step, rewardNames: rewards.names }
  })

/** Hands the trainer what the checkpoint the run resumes from kept of it; the saved reference is freed once copied. */
const resumeTrainer = (label: string, resume: Resumed, trainer: Update.Trainer) =>
  Effect.gen(function*() {
    if (Option.isNone(resume)) return
    const saved = resume.value
    if (saved.trainer !== null) yield* trainer.importState(saved.trainer).pipe(Effect.mapError((e) => new StageRunError({ stage: label, message: `resuming: ${e.message}` })))
    const ref = trainer.reference()
    if (saved.reference !== null && ref !== null) Transformer.copyWeights(saved.reference, ref)
    saved.reference?.dispose()
  })

/**
 * A step's prompts: the next `promptsPerStep` rows at the data cursor (moved on, so a resumed run draws the
 * same rows), group ids numbered per attempt so that dynamic sampling's draws never share one. With a
 * `distributed` section each row is also its own group batch, indexed by its cursor position (unique in
 * the stage, and the same on resume), which seeds it; `next` gives the next step's first draw's groups
 * without moving the cursor (drawn ahead during the update when `maxStaleness ≥ 1`).
 */
const promptSource = (ctx: RunContext, config: Config, label: string) => {
  const draw = Prompts.taskSampler(ctx.recipe.task, ctx.data.train, ctx.recipe.seed, `${label}/data`)
  const cut = new WeakMap<RecordBatch<Batch.PromptsType>, ReadonlyArray<Distributed.Group>>()
  const groupsAt = (cursor: number, first: number) =>
    draw(cursor, config.promptsPerStep).map((row, i) => ({ index: cursor + i, prompts: Prompts.batch(ctx, [row], first + i) }))
  const prompts = (attempt: number) => {
    const cursor = ctx.progress.cursor
    const rows = draw(cursor, config.promptsPerStep)
    ctx.progress.cursor += config.promptsPerStep
    const batch = Prompts.batch(ctx, rows, attempt * config.promptsPerStep)
    if (config.distributed !== undefined) cut.set(batch, groupsAt(cursor, attempt * config.promptsPerStep))
    return batch
  }
  const groups: Groups = {
    of: (batch) => cut.get(batch) ?? [],
    next: () => (ctx.progress.stageStep + 1 < config.steps ? groupsAt(ctx.progress.cursor, 0) : [])
  }
  return { prompts, groups }
}

const stepError = (label: string) => (e: Step.StepError) =>
  new StageRunError({ stage: label, message: e._tag === "StageError" ? `${e.stage}: ${e.message}` : e.message, cause: e })

/** Runs (or continues) the schedule: step, record, save the rollouts, evaluate and checkpoint when due. */
const train = (label: string, config: Config, resume: Resumed) =>
  Effect.scoped(
    Effect.gen(function*() {
      const ctx = yield* Run
      const metrics = yield* Metrics.Metrics
      const { prompts, groups } = promptSource(ctx, config, label)
      const tally = Distributed.staleness()
      const { step, rewardNames } = yield* makeStep(label, config, ctx, groups, tally)
      yield* resumeTrainer(label, resume, step.trainer)
      const report = Progress.reporter(label, config.steps, ctx.progress.stageStep, ctx.log, config.logEvery)
      let tokens = 0
      const perTask = Recipe.tasksOf(ctx.recipe.task).length > 1
      for (let s = ctx.progress.stageStep; s < config.steps; s++) {
        const { batch, metrics: stepMetrics } = yield* step.run(prompts).pipe(Effect.mapError(stepError(label)))
        ctx.progress.stageStep = s + 1
        ctx.progress.step++
        tokens += stepMetrics[GrpoMetrics.numTokens] ?? 0
        const { metrics: values, perf } = splitPerf(config.distributed !== undefined ? { ...stepMetrics, ...tally.take() } : stepMetrics)
        yield* metrics.record(ctx.progress.step, perTask ? { ...values, ...GrpoMetrics.ofTasks(batch) } : values)
        ctx.perf(ctx.progress.step, perf)
        if (config.saveRollouts) yield* RunDir.writeRollouts(ctx.dir, ctx.progress.step, batch).pipe(Effect.mapError((e) => fail(label)({ message: `${e.path}: ${e.message}` })))
        report(s, [["reward", values.reward], [rewardNames[0], values[GrpoMetrics.rewardMean(rewardNames[0])]], ["kl", values.kl], ["len", values[GrpoMetrics.completionMeanLength]]], tokens)
        const more = s + 1 < config.steps
        if (more && config.evalEvery > 0 && config.eval !== undefined && (s + 1) % config.evalEvery === 0) yield* Evaluate.run(config.eval, `${label}-step${s + 1}`)
        if (more && ctx.checkpointEvery > 0 && (s + 1) % ctx.checkpointEvery === 0) yield* ctx.checkpoint({ trainer: yield* step.trainer.exportState(), reference: step.trainer.reference() })
      }
    })
  )

const plugin: RecipeStage.StagePlugin<typeof Config.Type> = RecipeStage.define({
  name: "grpo",
  version: "0.1.0",
  description: "GRPO reinforcement learning on rule rewards (R1-Zero / R1 reasoning RL)",
  config: Config,
  make: (config) => ({
    kind: "grpo",
    check: (at) => check(config, at),
    run: (label, resume) => train(label, config, resume)
  })
})

export default plugin
