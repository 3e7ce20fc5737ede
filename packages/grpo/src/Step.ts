/**
 * One GRPO step (DeepSeekMath Algorithm 1, one iteration of its outer loop; DeepSeek-R1 §2.2), as two
 * pipelines of stages, each stage's output schema the next one's input:
 *
 *   draw:   prompts ─► rollout ─► afterRollout… ─► rewards ─► afterRewards…      Prompts → Scored
 *   fill:   DynamicSampling.fill: draws again until the batch is full (DAPO), one draw when off
 *   train:  advantages ─► afterAdvantages…                                         Scored → Advantages
 *   update: `update` below: μ passes of the clipped objective with β·KL (`Loss`) over minibatches
 *   metrics = Metrics.ofStep(batch, reward failure counters, update diagnostics)    once, one source per key
 *
 * The update (DeepSeekMath Algorithm 1, inner loop), for one rollout batch with advantages:
 *
 *   π_old log-probs  ← π_θ, once per rollout batch (`loss.tisCap` only: truncated importance sampling)
 *   π_ref log-probs  ← once per rollout batch (β > 0 only)
 *   for μ iterations:  for each minibatch (an optimizer step):  for each micro-batch:  g += ∇ L_micro
 *                      clip, guard, AdamW
 *   every `refSyncSteps` rollout batches: π_ref ← π_θ (R1 refreshed the reference this way)
 *
 * π_old is the rollout's own sampling log-probs (the `logprobs` column), not a second forward pass, unless
 * truncated importance sampling is on (`loss.tisCap`): then π_old is the policy's own pass before the update
 * and the sampler's log-probs only enter the TIS weight (`UpdateBatch.truncatedIs`, `Loss`). With
 * μ = 1 this is on-policy: ρ = π_θ / π_old = 1 up to sampler-vs-trainer float differences, so nothing is
 * clipped and the gradient is exactly Â ∇ log π_θ (plus the KL term); with μ > 1 later iterations see ρ ≠ 1
 * and the clip does its job. π_θ and π_ref are log softmax(logits / τ) at the temperature τ the batch's
 * `logprobs` were recorded at (`Batch.logprobTemperature`), as TRL does; top-k/top-p truncation at sampling
 * time is not modelled in π_θ (as in TRL and verl). Departures from the paper: the loss aggregation and
 * the policy objective are selectable (`Loss`, `Objective`); the reference is optional; truncated completions can be masked out of the loss
 * (`maskTruncated`, DAPO's overlong filtering).
 *
 * `…` are the user's stages at that point (`UserStage`: a filter, a reward shaper, an advantage estimator).
 * Both pipelines are checked when the step is built (`Pipeline.make`), before any prompt is sampled: a
 * stage that reads a column nothing before it writes is refused, naming both. `check` is the same check on
 * the stages' signatures alone, for a config that is not running yet.
 *
 * The stages come in made: the rollout (policy, sampler, tokenizer) and the rewards (plugins) are the
 * engine's to build; this page composes them and owns only advantages, dynamic sampling and the update.
 */
import { Batch, Pipeline, type RewardStage, type Stage, type UserStage } from "@r1flow/core"
import * as tf from "@tensorflow/tfjs"
import type { RecordBatch, Schema as ArrowSchema } from "apache-arrow"
import { Effect } from "effect"
import * as Advantages from "./Advantages.js"
import * as DynamicSampling from "./DynamicSampling.js"
import type * as Guard from "./Guard.js"
import * as Metrics from "./Metrics.js"
import * as Train from "./Train.js"
import type * as Update from "./Update.js"
import * as UpdateBatch from "./UpdateBatch.js"

/** Where the stages of a step sit; `S` is a made stage, or only its signature (`check`). */
export interface Layout<S extends Stage.Signature> {
  /** Prompts → Rollouts: G completions per prompt from the current policy. */
  readonly rollout: S
  /** Rollouts → Scored: `reward_<name>` per reward and the weighted total `reward`. */
  readonly rewards: S
  readonly afterRollout: ReadonlyArray<S>
  readonly afterRewards: ReadonlyArray<S>
  readonly afterAdvantages: ReadonlyArray<S>
  readonly advantages: Advantages.Config
}

/** What a step is made of. */
export interface Parts extends Layout<UserStage.UserStage> {
  /** The reward stage, whose failure counters go to the metrics. */
  readonly rewards: UserStage.UserStage & Pick<RewardStage.RewardStage, "failures">
  /** DAPO dynamic sampling; `undefined` is off. */
  readonly dynamicSampling: DynamicSampling.Config | undefined
  readonly trainer: Update.Trainer
  /**
   * Replaces the in-process run of the draw pipeline (the pipeline is still built and checked): the
   * engine's per-group draw, in this process or on rollout workers, that must give the batch the
   * pipeline would give for the same per-group seeds.
   */
  readonly draw?: (prompts: RecordBatch<Batch.PromptsType>) => Effect.Effect<RecordBatch<Batch.ScoredType>, Stage.StageError>
}

/** A step's batch with advantages (what it trained on) and its metrics. */
export interface Result {
  readonly batch: RecordBatch<Batch.AdvantagesType>
  readonly metrics: Record<string, number>
}

/** A step's failure: a stage's, dynamic sampling's (too many draws), or the update's guard's. */
export type StepError = Stage.StageError | DynamicSampling.DynamicSamplingError | Guard.NonFiniteError

/** GRPO steps over made stages. */
export interface Step {
  readonly trainer: Update.Trainer
  /** One step; `prompts(attempt)` gives attempt's fresh prompts (attempts > 0 only under dynamic sampling). */
  readonly run: (prompts: (attempt: number) => RecordBatch<Batch.PromptsType>) => Effect.Effect<Result, StepError>
}

/** The update's optimizer steps (μ passes of minibatches); the applied ones' results. Diagnostics go onto `pending`. */
const optimizerSteps = (t: Update.Trainer, p: UpdateBatch.Prepared, ref: Float32Array | null, micro: number, pending: Array<Metrics.Stacked<keyof Metrics.Diagnostics>>) =>
  Effect.gen(function*() {
    const applied: Array<Train.StepResult> = []
    for (const mini of UpdateBatch.schedule(p.B, t.config, t.rng)) {
      const loss = UpdateBatch.microLoss(p, t.policy, ref, t.config.loss, UpdateBatch.normalizer(p, mini, micro), pending, t.config.activationCheckpointing)
      const index = t.progress.updates
      const result = yield* Train.optimizerStep(t.optimizer, t.guard, index, Train.chunks(mini, micro).map(loss))
      t.progress.updates++
      if (!result.applied) continue
      applied.push(result)
      t.guard.good(index, { [Metrics.loss]: result.loss, [Metrics.gradNorm]: result.gradNorm, [Metrics.learningRate]: result.learningRate })
    }
    return applied
  })

/** One policy update of `t` on a rollout batch with advantages; its diagnostics as metrics (`Metrics.ofUpdate`). */
export const update = (t: Update.Trainer, input: RecordBatch<Batch.AdvantagesType>) =>
  Effect.gen(function*() {
    const t0 = performance.now()
    const prepared = yield* UpdateBatch.prepare(input, t.config) // ids [B, T], π_old and mask [B, W], Â [B]
    const micro = UpdateBatch.microSize(prepared.B, t.config)
    const { p, tis } = yield* UpdateBatch.truncatedIs(prepared, t.policy, micro, t.config.loss.tisCap) // π_old ← π_θ, w [B, W]: tisCap only
    UpdateBatch.syncReference(t)
    const ref = yield* UpdateBatch.referenceLogProbs(p, t.reference(), micro) // [B, W], null when β = 0
    // Each micro-batch's diagnostics stay on the device until the update is done: one read for them all.
    const pending: Array<Metrics.Stacked<keyof Metrics.Diagnostics>> = []
    const applied = yield* optimizerSteps(t, p, ref, micro, pending).pipe(Effect.onError(() => Effect.sync(() => tf.dispose(pending.map((s) => s.values)))))
    const diagnostics = yield* Metrics.diagnosticsOf(pending)
    t.progress.steps++
    const seconds = (performance.now() - t0) / 1000
    return Metrics.ofUpdate(diagnostics, applied, {
      optimizer: t.optimizer, guard: t.guard, kl: ref !== null, dualClip: t.config.loss.delta !== undefined, tis, tokens: p.tokens * t.config.iterations, seconds
    })
  })

/** Dynamic sampling reads the draw's total reward and group ids. */
const fillSink: Pipeline.Sink = { name: "grpo/dynamic-sampling", input: Batch.Scored }
/** The update reads the batch with advantages. */
const updateSink: Pipeline.Sink = { name: "grpo/update", input: Batch.Advantages }

const drawStages = <S extends Stage.Signature>(l: Layout<S>) => [l.rollout, ...l.afterRollout, l.rewards, ...l.afterRewards]
const trainStages = <S extends Stage.Signature>(l: Layout<S>) => [Advantages.stage(l.advantages), ...l.afterAdvantages]

/** The step's schemas, end to end from the prompts to the update, checked on signatures alone. */
export const check = (layout: Layout<Stage.Signature>): Effect.Effect<void, Pipeline.PipelineError> =>
  Effect.flatMap(Pipeline.validate(drawStages(layout), Batch.Prompts, fillSink), (scored: ArrowSchema) =>
    Effect.asVoid(Pipeline.validate(trainStages(layout), scored, updateSink)))

/** Builds the step: both pipelines are checked here, before any batch flows. */
export const make = (parts: Parts): Effect.Effect<Step, Pipeline.PipelineError> =>
  Effect.gen(function*() {
    const draw = yield* Pipeline.make(drawStages(parts), { source: Batch.Prompts, sink: { ...fillSink, input: Batch.Scored } })
    const train = yield* Pipeline.make(trainStages(parts), { source: draw.output, sink: { ...updateSink, input: Batch.Advantages } })
    const run = (prompts: (attempt: number) => RecordBatch<Batch.PromptsType>) =>
      Effect.gen(function*() {
        const scored = yield* DynamicSampling.fill(parts.dynamicSampling, (attempt) =>
          Effect.suspend(() => parts.draw !== undefined ? parts.draw(prompts(attempt)) : Pipeline.runBatch(draw, prompts(attempt))))
        const batch = yield* Pipeline.runBatch(train, scored.batch)
        const update = yield* parts.trainer.step(batch)
        const metrics = Metrics.ofStep({ batch, failures: parts.rewards.failures(), update, droppedGroups: scored.droppedGroups })
        return { batch, metrics }
      })
    return { trainer: parts.trainer, run }
  })
