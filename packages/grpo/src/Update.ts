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
  /** Everything besides the weights a resumed run needs: optimizer moments and step, counters, guard. */
  readonly exportState: () => Train.TrainerState
  /** Restores `exportState`'s result (the weights are restored separately). */
  readonly importState: (state: Train.TrainerState) => Effect.Effect<void, Optimizer.StateError>
  /**
   * One policy update on a rollout batch with advantages; its diagnostics as metrics (`Metrics` names: loss,
   * grad_norm, learning_rate, kl, entropy, clip ratios, optimizer/skipped steps, throughput). The batch's own
   * metrics (rewards, lengths) are not the update's: `Metrics.ofStep` adds them.
   */
  readonly step: (batch: RecordBatch<Batch.AdvantagesType>) => Effect.Effect<Record<string, number>, Stage.StageError | Guard.NonFiniteError>
}

const NAME = "grpo/update"

/** Rows `rows` of a row-major `[B, W]` array, packed. */
const takeRows = <A extends Float32Array | Int32Array>(src: A, width: number, rows: ArrayLike<number>): A => {
  const out = new (src.constructor as new (n: number) => A)(rows.length * width)
  for (let i = 0; i < rows.length; i++) out.set(src.subarray(rows[i] * width, (rows[i] + 1) * width), i * width)
  return out
}

/** A rollout batch as the update reads it: flat arrays, truncated rows masked when `maskTruncated`. */
interface Prepared {
  /** `ids` `[B, T]`; `oldLogprobs` (π_old) `[B, W]`, W = T − 1. */
  readonly data: LogProbs.CompletionBatch
  readonly temperature: number
  readonly advantages: Float32Array // [B]
  readonly mask: Float32Array // [B, W]
  readonly B: number
  readonly W: number
  /** Prompt + completion tokens of the batch, for the throughput. */
  readonly tokens: number
}

const sum = (xs: Int32Array) => xs.reduce((a, b) => a + b, 0)

const prepare = (input: RecordBatch<Batch.AdvantagesType>, config: Config): Effect.Effect<Prepared, Stage.StageError> =>
  Effect.flatMap(Stage.check(NAME, Batch.Advantages, input), (batch) =>
    Effect.try({
      try: () => {
        const data = LogProbs.completionBatch(batch, config.padId)
        const W = data.time - 1
        const mask = config.maskTruncated ? Float32Array.from(data.mask) : data.mask
        if (config.maskTruncated) Metrics.strings(batch.getChild("finish_reason")!).forEach((f, b) => f === "length" && mask.fill(0, b * W, (b + 1) * W))
        const advantages = Columns.float32Values(batch.getChild("advantage")!)
        const tokens = sum(Columns.int32Values(batch.getChild("prompt_length")!)) + sum(Columns.int32Values(batch.getChild("completion_length")!))
        return { data, temperature: Batch.logprobTemperature(batch.schema), advantages, mask, B: data.batch, W, tokens }
      },
      catch: (cause) => new Stage.StageError({ stage: NAME, message: cause instanceof Error ? cause.message : String(cause), cause })
    }))

/** `logprobs` and `entropy` `[rows, W]` under `model`; the rows share the template and often the question, so their common prefix runs once. */
const logProbsOf = (p: Prepared, model: Transformer.Model, rows: ArrayLike<number>) => {
  const ids = takeRows(p.data.ids, p.data.time, rows)
  const shared = LogProbs.commonPrefixLength(ids, rows.length, p.data.time)
  return tokenLogProbs(model, tf.tensor2d(ids, [rows.length, p.data.time], "int32"), p.temperature, shared)
}

/** π_ref ← π_θ before every `refSyncSteps`-th rollout batch (R1 refreshed its reference this way). */
const syncReference = (policy: Transformer.Model, reference: Transformer.Model | null, config: Config, steps: number) => {
  if (reference !== null && config.refSyncSteps > 0 && steps > 0 && steps % config.refSyncSteps === 0) Transformer.copyWeights(policy, reference)
}

/** log π_ref `[B, W]`, once per rollout batch, micro-batch by micro-batch, kept as plain floats; `null` when β = 0. */
const referenceLogProbs = (p: Prepared, reference: Transformer.Model | null, micro: number): Float32Array | null => {
  if (reference === null) return null
  const ref = new Float32Array(p.B * p.W)
  for (const rows of Train.chunks(Array.from({ length: p.B }, (_, i) => i), micro)) {
    const lp = tf.tidy(() => logProbsOf(p, reference, rows).logprobs)
    ref.set(lp.dataSync(), rows[0] * p.W)
    lp.dispose()
  }
  return ref
}

/** The optimizer steps of one update: μ passes over the rows, each in a fresh order (when minibatches are smaller than B) cut into minibatches. */
const schedule = (B: number, config: Config, rng: Rng.Stream): Array<Array<number>> => {
  const miniSize = config.miniBatchSize ?? B
  const out: Array<Array<number>> = []
  for (let it = 0; it < config.iterations; it++) {
    const order = Array.from({ length: B }, (_, i) => i)
    if (miniSize < B) rng.shuffle(order)
    out.push(...Train.chunks(order, miniSize))
  }
  return out
}

/** The loss normaliser of one minibatch (`Loss.Normalizer`): N, its completion tokens, K. */
const normalizerOf = (p: Prepared, mini: ReadonlyArray<number>, micro: number): Loss.Normalizer => {
  let tokens = 0
  for (const r of mini) for (let t = 0; t < p.W; t++) tokens += p.mask[r * p.W + t]
  return { sequences: mini.length, tokens, microBatches: Math.ceil(mini.length / micro) }
}

/** Token-weighted sums of `Loss.Output`'s token means over an update's micro-batches, and Σ entropy · m. */
interface Diagnostics { tokens: number; kl: number; clipLow: number; clipHigh: number; clipRegion: number; entropy: number }

const emptyDiagnostics = (): Diagnostics => ({ kl: 0, clipLow: 0, clipHigh: 0, clipRegion: 0, entropy: 0, tokens: 0 })

/** Adds one micro-batch: its token means weighted by its tokens; `entropy` is already a sum over tokens. */
const addDiagnostics = (d: Diagnostics, m: Readonly<Diagnostics>) => {
  d.tokens += m.tokens
  d.kl += m.kl * m.tokens
  d.clipLow += m.clipLow * m.tokens
  d.clipHigh += m.clipHigh * m.tokens
  d.clipRegion += m.clipRegion * m.tokens
  d.entropy += m.entropy
}

/** Named scalars read back with one device read, not one per scalar. */
const readScalars = <K extends string>(scalars: Record<K, tf.Tensor>): Record<K, number> => {
  const keys = Object.keys(scalars) as Array<K>
  const values = tf.stack(keys.map((k) => scalars[k])).dataSync()
  return Object.fromEntries(keys.map((k, i) => [k, values[i]])) as Record<K, number>
}

/** The loss of micro-batch `rows` (`Loss.compute` with the minibatch's normaliser); adds its diagnostics to `diagnostics`. */
const microLoss = (
  p: Prepared,
  policy: Transformer.Model,
  ref: Float32Array | null,
  config: Config,
  normalizer: Loss.Normalizer,
  diagnostics: Diagnostics
) => (rows: ReadonlyArray<number>): Train.MicroLoss => () => {
  const { W } = p
  const mask = tf.tensor2d(takeRows(p.mask, W, rows), [rows.length, W])
  const { logprobs, entropy } = logProbsOf(p, policy, rows)
  const out = Loss.compute({
    logprobs,
    oldLogprobs: tf.tensor2d(takeRows(p.data.oldLogprobs, W, rows), [rows.length, W]),
    refLogprobs: ref === null ? null : tf.tensor2d(takeRows(ref, W, rows), [rows.length, W]),
    advantages: tf.tensor1d(takeRows(p.advantages, 1, rows)),
    mask
  }, config.loss, normalizer)
  const tokens = tf.sum(mask)
  addDiagnostics(diagnostics, readScalars({ tokens, kl: out.kl, clipLow: out.clipLow, clipHigh: out.clipHigh, clipRegion: out.clipRegion, entropy: tf.sum(tf.mul(entropy, mask)) }))
  return out.loss
}

/** The update's metrics: means over its applied optimizer steps, token means of the diagnostics, throughput. */
const metricsOf = (
  p: Prepared,
  d: Diagnostics,
  applied: ReadonlyArray<Train.StepResult>,
  t: { readonly optimizer: Optimizer.AdamW; readonly guard: Guard.Guard; readonly kl: boolean; readonly iterations: number; readonly seconds: number }
): Record<string, number> => {
  const mean = (xs: Array<number>) => (xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length)
  const perToken = (x: number) => (d.tokens > 0 ? x / d.tokens : 0)
  return {
    [Metrics.loss]: mean(applied.map((r) => r.loss)),
    [Metrics.gradNorm]: mean(applied.map((r) => r.gradNorm)),
    [Metrics.learningRate]: applied.length > 0 ? applied[applied.length - 1].learningRate : t.optimizer.currentLearningRate(),
    ...(t.kl ? { [Metrics.kl]: perToken(d.kl) } : {}),
    [Metrics.entropy]: perToken(d.entropy),
    [Metrics.clipLow]: perToken(d.clipLow),
    [Metrics.clipHigh]: perToken(d.clipHigh),
    [Metrics.clipRegion]: perToken(d.clipRegion),
    [Metrics.optimizerSteps]: applied.length,
    [Metrics.skippedSteps]: t.guard.skipped(),
    [Metrics.throughput]: (p.tokens * t.iterations) / t.seconds
  }
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
        const p = yield* prepare(input, config)
        const micro = Math.min(config.microBatchSize ?? config.miniBatchSize ?? p.B, config.miniBatchSize ?? p.B)
        syncReference(policy, reference, config, steps)
        const ref = referenceLogProbs(p, reference, micro)
        const diagnostics = emptyDiagnostics()
        const applied: Array<Train.StepResult> = []
        for (const mini of schedule(p.B, config, rng)) {
          const loss = microLoss(p, policy, ref, config, normalizerOf(p, mini, micro), diagnostics)
          const result = yield* Train.optimizerStep(optimizer, guard, updates, Train.chunks(mini, micro).map(loss))
          if (result.applied) {
            applied.push(result)
            guard.good(updates, { [Metrics.loss]: result.loss, [Metrics.gradNorm]: result.gradNorm, [Metrics.learningRate]: result.learningRate })
          }
          updates++
        }
        steps++
        const seconds = (performance.now() - t0) / 1000
        return metricsOf(p, diagnostics, applied, { optimizer, guard, kl: reference !== null, iterations: config.iterations, seconds })
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
