/**
 * The GRPO policy update (DeepSeekMath Algorithm 1, inner loop): for one rollout batch with advantages,
 *
 *   π_ref log-probs  ← once per rollout batch (β > 0 only)
 *   for μ iterations:  for each minibatch (an optimizer step):  for each micro-batch:  g += ∇ L_micro
 *                      clip, guard, AdamW
 *   every `refSyncSteps` rollout batches: π_ref ← π_θ (R1 refreshed the reference this way)
 *
 * π_old is the rollout's own sampling log-probs (the `logprobs` column), never a second forward pass. With
 * μ = 1 this is on-policy: ρ = π_θ / π_old = 1 up to sampler-vs-trainer float differences, so nothing is
 * clipped and the gradient is exactly Â ∇ log π_θ (plus the KL term). With μ > 1, later iterations see
 * ρ ≠ 1 and the clip does its job. The sampler and the trainer must agree on the distribution: π_θ and π_ref
 * are log softmax(logits / τ) at the temperature τ the batch's `logprobs` were recorded at
 * (`Batch.logprobTemperature`: the rollouts' schema metadata; 1 when none is recorded), as TRL does;
 * top-k/top-p truncation at sampling time is not modelled in π_θ (as in TRL and verl).
 *
 * Departures from the paper: the loss aggregation is selectable (`Loss`); the reference is optional (β = 0
 * keeps no reference model in memory at all); truncated completions can be masked out of the loss
 * (`maskTruncated`, DAPO's overlong filtering).
 */
import { Batch, Columns, Stage, type Rng } from "@r1flow/core"
import { LogProbs, Transformer } from "@r1flow/model"
import * as tf from "@tensorflow/tfjs"
import type { RecordBatch } from "apache-arrow"
import { Effect, Schema, type Scope } from "effect"
import * as Guard from "./Guard.js"
import * as Loss from "./Loss.js"
import * as Metrics from "./Metrics.js"
import * as Optimizer from "./Optimizer.js"
import * as Train from "./Train.js"

const positiveInt = Schema.Int.check(Schema.isGreaterThan(0))

/** Policy-update configuration. Unset batch sizes mean "the whole rollout batch". */
export const Config = Schema.Struct({
  loss: Loss.Config.pipe(Schema.withDecodingDefaultKey(Effect.succeed({}))),
  optimizer: Optimizer.Config.pipe(Schema.withDecodingDefaultKey(Effect.succeed({}))),
  guard: Guard.Config.pipe(Schema.withDecodingDefaultKey(Effect.succeed({}))),
  /** μ: passes over each rollout batch. */
  iterations: positiveInt.pipe(Schema.withDecodingDefaultKey(Effect.succeed(1))),
  /** Sequences per optimizer step. */
  miniBatchSize: Schema.optionalKey(positiveInt),
  /** Sequences per forward/backward pass (gradient accumulation over a minibatch). */
  microBatchSize: Schema.optionalKey(positiveInt),
  /** Copy π_θ into π_ref every this many rollout batches; 0 never. */
  refSyncSteps: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(0))),
  /** Mask completions whose finish reason is `length` out of the loss. */
  maskTruncated: Schema.Boolean.pipe(Schema.withDecodingDefaultKey(Effect.succeed(false))),
  padId: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(0)))
})
/** Policy-update configuration. */
export type Config = typeof Config.Type

/**
 * `logprobs` and `entropy` `[B, T−1]` of `ids` `[B, T]` under softmax(logits / τ); `LogProbs.tokenLogProbs`
 * with a temperature. `sharedPrefix`: the rows' common leading tokens, run once (`LogProbs.Options`).
 * Differentiable.
 */
export const tokenLogProbs = (
  model: Transformer.Model,
  ids: tf.Tensor2D,
  temperature: number,
  sharedPrefix = 0
): { logprobs: tf.Tensor2D; entropy: tf.Tensor2D } => LogProbs.tokenLogProbs(model, ids, { temperature, sharedPrefix })

/** The GRPO trainer: policy, optional frozen reference, AdamW and the guard. */
export interface Trainer {
  readonly config: Config
  readonly policy: Transformer.Model
  /** `null` when β = 0. */
  readonly reference: () => Transformer.Model | null
  readonly optimizer: Optimizer.AdamW
  readonly guard: Guard.Guard
  /** Rollout batches trained on so far. */
  readonly steps: () => number
  /** One policy update on a rollout batch with advantages; the step's metrics (`Metrics` names). */
  /** Everything besides the weights a resumed run needs: optimizer moments and step, counters, guard. */
  readonly exportState: () => Train.TrainerState
  /** Restores `exportState`'s result (the weights are restored separately). */
  readonly importState: (state: Train.TrainerState) => Effect.Effect<void, Optimizer.StateError>
  readonly step: (batch: RecordBatch<Batch.AdvantagesType>) => Effect.Effect<Record<string, number>, Stage.StageError | Guard.NonFiniteError>
}

const NAME = "grpo/update"

/** Rows `rows` of a row-major `[B, W]` array, packed. */
const takeRows = <A extends Float32Array | Int32Array>(src: A, width: number, rows: ArrayLike<number>): A => {
  const out = new (src.constructor as new (n: number) => A)(rows.length * width)
  for (let i = 0; i < rows.length; i++) out.set(src.subarray(rows[i] * width, (rows[i] + 1) * width), i * width)
  return out
}

const chunks = <A>(xs: ReadonlyArray<A>, size: number): Array<Array<A>> => {
  const out: Array<Array<A>> = []
  for (let i = 0; i < xs.length; i += size) out.push(xs.slice(i, i + size))
  return out
}

/**
 * Builds the trainer around `policy` (trained in place). Acquires AdamW and, when β > 0, a frozen clone
 * of the policy as π_ref; both are freed when the scope closes. `rng` orders rows into minibatches.
 */
export const make = (
  policy: Transformer.Model,
  config: Config,
  rng: Rng.Stream
): Effect.Effect<Trainer, Stage.StageError, Scope.Scope> =>
  Effect.gen(function*() {
    const problem = Loss.validate(config.loss)
    if (problem !== undefined) return yield* new Stage.StageError({ stage: NAME, message: problem })
    const optimizer = yield* Optimizer.acquire(policy.weights, config.optimizer)
    const reference = config.loss.beta > 0
      ? yield* Effect.acquireRelease(Effect.sync(() => Transformer.clone(policy)), (m) => Effect.sync(() => m.dispose()))
      : null
    const guard = Guard.make(config.guard)
    let steps = 0
    let updates = 0

    const step = (input: RecordBatch<Batch.AdvantagesType>) =>
      Effect.gen(function*() {
        const t0 = performance.now()
        const batch = yield* Stage.check(NAME, Batch.Advantages, input)
        const { data, temperature } = yield* Effect.try({
          try: () => ({ data: LogProbs.completionBatch(batch, config.padId), temperature: Batch.logprobTemperature(batch.schema) }),
          catch: (cause) => new Stage.StageError({ stage: NAME, message: cause instanceof Error ? cause.message : String(cause), cause })
        })
        const B = data.batch
        const W = data.time - 1
        const advantages = Columns.float32Values(batch.getChild("advantage")!)
        const finish = Metrics.strings(batch.getChild("finish_reason")!)
        const truncated = finish.map((f) => f === "length")
        const mask = config.maskTruncated ? Float32Array.from(data.mask) : data.mask
        if (config.maskTruncated) truncated.forEach((t, b) => t && mask.fill(0, b * W, (b + 1) * W))
        const micro = Math.min(config.microBatchSize ?? config.miniBatchSize ?? B, config.miniBatchSize ?? B)
        // Rows share the template and often the question: their common prefix runs once per micro-batch.
        const logProbsOf = (model: Transformer.Model, rows: ArrayLike<number>) => {
          const ids = takeRows(data.ids, data.time, rows)
          const shared = LogProbs.commonPrefixLength(ids, rows.length, data.time)
          return tokenLogProbs(model, tf.tensor2d(ids, [rows.length, data.time], "int32"), temperature, shared)
        }

        if (reference !== null && config.refSyncSteps > 0 && steps > 0 && steps % config.refSyncSteps === 0) {
          Transformer.copyWeights(policy, reference)
        }
        // π_ref once per rollout batch, micro-batch by micro-batch, kept as plain floats.
        let ref: Float32Array | null = null
        if (reference !== null) {
          ref = new Float32Array(B * W)
          const all = Array.from({ length: B }, (_, i) => i)
          for (const rows of chunks(all, micro)) {
            const lp = tf.tidy(() => logProbsOf(reference, rows).logprobs)
            ref.set(lp.dataSync(), rows[0] * W)
            lp.dispose()
          }
        }

        // token-weighted sums for the diagnostics
        const sums = { kl: 0, clipLow: 0, clipHigh: 0, clipRegion: 0, entropy: 0, tokens: 0 }
        const applied: Array<Train.StepResult> = []
        const miniSize = config.miniBatchSize ?? B
        for (let it = 0; it < config.iterations; it++) {
          const order = Array.from({ length: B }, (_, i) => i)
          if (miniSize < B) rng.shuffle(order)
          for (const mini of chunks(order, miniSize)) {
            let stepTokens = 0
            for (const r of mini) for (let t = 0; t < W; t++) stepTokens += mask[r * W + t]
            const normalizer: Loss.Normalizer = { sequences: mini.length, tokens: stepTokens, microBatches: Math.ceil(mini.length / micro) }
            const losses = chunks(mini, micro).map((rows): Train.MicroLoss => () => {
              const m = tf.tensor2d(takeRows(mask, W, rows), [rows.length, W])
              const { logprobs, entropy } = logProbsOf(policy, rows)
              const out = Loss.compute({
                logprobs,
                oldLogprobs: tf.tensor2d(takeRows(data.oldLogprobs, W, rows), [rows.length, W]),
                refLogprobs: ref === null ? null : tf.tensor2d(takeRows(ref, W, rows), [rows.length, W]),
                advantages: tf.tensor1d(takeRows(advantages, 1, rows)),
                mask: m
              }, config.loss, normalizer)
              const tokens = tf.sum(m)
              // one read per micro-batch: [tokens, kl, clipLow, clipHigh, clipRegion, Σ entropy·m]
              const diag = tf.stack([tokens, out.kl, out.clipLow, out.clipHigh, out.clipRegion, tf.sum(tf.mul(entropy, m))])
              const d = diag.dataSync()
              sums.tokens += d[0]
              sums.kl += d[1] * d[0]
              sums.clipLow += d[2] * d[0]
              sums.clipHigh += d[3] * d[0]
              sums.clipRegion += d[4] * d[0]
              sums.entropy += d[5]
              return out.loss
            })
            const result = yield* Train.optimizerStep(optimizer, guard, updates, losses)
            updates++
            if (result.applied) {
              applied.push(result)
              guard.good(updates - 1, { [Metrics.loss]: result.loss, [Metrics.gradNorm]: result.gradNorm, [Metrics.learningRate]: result.learningRate })
            }
          }
        }
        steps++
        const seconds = (performance.now() - t0) / 1000
        const mean = (xs: Array<number>) => (xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length)
        const perToken = (x: number) => (sums.tokens > 0 ? x / sums.tokens : 0)
        const promptLengths = Columns.int32Values(batch.getChild("prompt_length")!)
        let processed = 0
        for (let b = 0; b < B; b++) processed += promptLengths[b]
        const completionLengths = Columns.int32Values(batch.getChild("completion_length")!)
        for (let b = 0; b < B; b++) processed += completionLengths[b]
        return {
          ...Metrics.ofBatch(batch),
          [Metrics.loss]: mean(applied.map((r) => r.loss)),
          [Metrics.gradNorm]: mean(applied.map((r) => r.gradNorm)),
          [Metrics.learningRate]: applied.length > 0 ? applied[applied.length - 1].learningRate : optimizer.currentLearningRate(),
          ...(reference !== null ? { [Metrics.kl]: perToken(sums.kl) } : {}),
          [Metrics.entropy]: perToken(sums.entropy),
          [Metrics.clipLow]: perToken(sums.clipLow),
          [Metrics.clipHigh]: perToken(sums.clipHigh),
          [Metrics.clipRegion]: perToken(sums.clipRegion),
          [Metrics.optimizerSteps]: applied.length,
          [Metrics.skippedSteps]: guard.skipped(),
          [Metrics.throughput]: (processed * config.iterations) / seconds
        }
      })

    return {
      config,
      policy,
      reference: () => reference,
      optimizer,
      guard,
      steps: () => steps,
      exportState: () => ({ optimizer: optimizer.exportState(), steps, updates, guard: guard.exportState() }),
      importState: (state) =>
        Effect.map(optimizer.importState(state.optimizer), () => {
          steps = state.steps
          updates = state.updates
          guard.importState(state.guard)
        }),
      step
    } satisfies Trainer
  })
