/**
 * `grpo`: the R1 reinforcement-learning stage. Each step draws prompts, samples G completions per
 * prompt from the current policy, scores them with the configured reward plugins, turns rewards into
 * group-relative advantages and updates the policy (clipped ratio objective, β·KL to a reference).
 * Every step's rollouts are written to `rollouts/step-NNNNNN.arrow`; held-out evaluations can run
 * every `evalEvery` steps.
 */
import { Batch, Columns, Config as CoreConfig, type RewardStage } from "@r1flow/core"
import { Advantages, DynamicSampling, Metrics as GrpoMetrics, Update } from "@r1flow/grpo"
import { Transformer } from "@r1flow/model"
import type { RecordBatch, Vector, Float32 } from "apache-arrow"
import { Effect, Schema } from "effect"
import { Run, splitPerf, StageRunError } from "../Context.js"
import * as Evaluate from "../Evaluate.js"
import * as Progress from "../Progress.js"
import * as Prompts from "../Prompts.js"
import * as RecipeStage from "../RecipeStage.js"
import * as RunDir from "../RunDir.js"
import * as Sampling from "../Sampling.js"

/** GRPO stage config. */
export const Config = Schema.Struct({
  steps: Schema.Int.check(Schema.isGreaterThan(0)),
  /** Prompts (groups) per step. */
  promptsPerStep: Schema.Int.check(Schema.isGreaterThan(0)),
  /** G: completions per prompt. */
  groupSize: Schema.Int.check(Schema.isGreaterThan(1)),
  sampling: Sampling.Config,
  /** Reward plugins with weights and failure policy (see `RewardStage.Entry`). */
  rewards: Schema.Array(Schema.Unknown).check(Schema.isMinLength(1)),
  advantages: Advantages.Config.pipe(Schema.withDecodingDefaultKey(Effect.succeed({}))),
  update: Schema.Unknown.pipe(Schema.withDecodingDefaultKey(Effect.succeed({}))),
  /** DAPO dynamic sampling: keep drawing until `targetGroups` groups have reward variance. */
  dynamicSampling: Schema.optionalKey(DynamicSampling.Config),
  evalEvery: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(0))),
  eval: Schema.optionalKey(Evaluate.Config),
  saveRollouts: Schema.Boolean.pipe(Schema.withDecodingDefaultKey(Effect.succeed(true))),
  logEvery: Schema.Int.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(5)))
})
/** GRPO stage config. */
export type Config = typeof Config.Type

const fail = (stage: string) => (e: { readonly message: string }) => new StageRunError({ stage, message: e.message, cause: e })

/**
 * The policy update's config: the stage's `update` section decoded, then what the stage itself knows set
 * explicitly where the section leaves it out: the tokenizer's `padId`, dr_grpo's constant L
 * (`loss.maxCompletionLength`) = `sampling.maxNewTokens`, the longest completion the sampler writes (Dr. GRPO's
 * generation budget), and the schedule's `totalSteps` = steps × iterations. The temperature is not here: it
 * comes with each rollouts batch (`Batch.logprobTemperature`).
 */
export const updateConfig = (label: string, config: Config, padId: number): Effect.Effect<Update.Config, StageRunError> =>
  Effect.map(
    Schema.decodeUnknownEffect(Update.Config)(config.update).pipe(Effect.mapError((e) => new StageRunError({ stage: label, message: `update: ${e.message}` }))),
    (update) => ({
      ...update,
      padId: (config.update as { readonly padId?: unknown }).padId === undefined ? padId : update.padId,
      loss: { ...update.loss, maxCompletionLength: update.loss.maxCompletionLength ?? config.sampling.maxNewTokens },
      optimizer: { ...update.optimizer, totalSteps: update.optimizer.totalSteps ?? config.steps * update.iterations }
    })
  )

/** Before the run: the rewards (plugins and their configs), `update` and the eval's accuracy reward, unknown keys refused. */
const check = (config: Config, { where, from }: RecipeStage.CheckContext) =>
  Effect.all([
    Sampling.checkRewards(config.rewards, where, from),
    CoreConfig.decode(Update.Config, config.update, { source: "plugin grpo", prefix: `${where}.update` }),
    Sampling.checkAccuracy(config.eval?.accuracy, `${where}.eval`, from)
  ], { discard: true })

const plugin: RecipeStage.StagePlugin<typeof Config.Type> = RecipeStage.define({
  name: "grpo",
  version: "0.1.0",
  description: "GRPO reinforcement learning on rule rewards (R1-Zero / R1 reasoning RL)",
  config: Config,
  make: (config) => ({
    kind: "grpo",
    check: (at) => check(config, at),
    run: (label) =>
      Effect.scoped(
        Effect.gen(function*() {
          const ctx = yield* Run
          const rewardStage = yield* Sampling.loadRewards(label, config.rewards)
          const trainer = yield* Update.make(ctx.policy, yield* updateConfig(label, config, ctx.tokenizer.specialIds.eot), ctx.rng.stream(`${label}/minibatch`)).pipe(
            Effect.mapError(fail(label))
          )
          if (ctx.resume !== null) {
            const saved = ctx.resume
            ctx.resume = null
            if (saved.trainer !== null) yield* trainer.importState(saved.trainer).pipe(Effect.mapError((e) => new StageRunError({ stage: label, message: `resuming: ${e.message}` })))
            const ref = trainer.reference()
            if (saved.reference !== null && ref !== null) Transformer.copyWeights(saved.reference, ref)
            saved.reference?.dispose()
          }
          const advantages = Advantages.stage(config.advantages)
          const draw = Prompts.sampler(ctx.data.train, ctx.recipe.seed, `${label}/data`)
          const report = Progress.reporter(label, config.steps, ctx.progress.stageStep, ctx.log, config.logEvery)
          let tokens = 0

          const sample = (attempt: number) =>
            Effect.gen(function*() {
              const rows = draw(ctx.progress.cursor, config.promptsPerStep)
              ctx.progress.cursor += config.promptsPerStep
              const rollouts = yield* Sampling.rollouts(ctx, rows, {
                ...config.sampling,
                groupSize: config.groupSize,
                stream: `${label}/rollout`,
                firstGroup: attempt * config.promptsPerStep,
                stage: label
              })
              return yield* Sampling.score(label, rewardStage, rollouts)
            })

          for (let s = ctx.progress.stageStep; s < config.steps; s++) {
            let scored: RecordBatch<RewardStage.ScoredType>
            let dropped = 0
            if (config.dynamicSampling === undefined) {
              scored = yield* sample(0)
            } else {
              let state = DynamicSampling.empty
              let attempt = 0
              for (;;) {
                const draw = yield* sample(attempt++)
                const decision = yield* DynamicSampling.accept(state, draw as RecordBatch<Batch.ScoredType>, config.dynamicSampling).pipe(Effect.mapError(fail(label)))
                state = decision.state
                if (decision._tag === "Full") {
                  scored = decision.batch as RecordBatch<RewardStage.ScoredType>
                  dropped = state.droppedGroups
                  break
                }
              }
            }
            const withAdvantages = yield* advantages.run(scored as unknown as RecordBatch<Batch.ScoredType>).pipe(Effect.mapError(fail(label)))
            const update = yield* trainer.step(withAdvantages).pipe(Effect.mapError(fail(label)))
            ctx.progress.stageStep = s + 1
            ctx.progress.step++
            tokens += update[GrpoMetrics.numTokens] ?? 0
            const step = ctx.progress.step
            const all: Record<string, number> = {
              ...GrpoMetrics.ofBatch(withAdvantages),
              ...rewardStage.metrics(scored),
              ...update,
              ...(config.dynamicSampling !== undefined ? { "dynamic_sampling/dropped_groups": dropped } : {})
            }
            const { metrics: values, perf } = splitPerf(all)
            yield* ctx.metrics.record(step, values)
            ctx.perf(step, perf)
            if (config.saveRollouts) yield* RunDir.writeRollouts(ctx.dir, step, withAdvantages).pipe(Effect.mapError((e) => fail(label)({ message: `${e.path}: ${e.message}` })))
            const accuracy = scored.getChild(Batch.rewardColumn(rewardStage.names[0])) as Vector<Float32> | null
            report(s, [
              ["reward", values.reward],
              [rewardStage.names[0], accuracy === null ? undefined : mean(Columns.float32Values(accuracy))],
              ["kl", values.kl],
              ["len", values["completions/mean_length"]]
            ], tokens)
            if (config.evalEvery > 0 && config.eval !== undefined && (s + 1) % config.evalEvery === 0 && s + 1 < config.steps) {
              yield* Evaluate.run(config.eval, `${label}-step${s + 1}`)
            }
            if (ctx.checkpointEvery > 0 && (s + 1) % ctx.checkpointEvery === 0 && s + 1 < config.steps) {
              yield* ctx.checkpoint({ trainer: trainer.exportState(), reference: trainer.reference() })
            }
          }
        })
      )
  })
})

const mean = (xs: Float32Array) => {
  let n = 0, sum = 0
  for (const x of xs) if (x === x) { n++; sum += x }
  return n > 0 ? sum / n : NaN
}

export default plugin
