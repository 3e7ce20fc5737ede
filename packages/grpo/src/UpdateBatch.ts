/**
 * The pieces of the policy update that `Step.update` calls by name: a rollout batch as flat arrays, the
 * reference pass, the minibatch schedule, the loss normaliser and the micro-batch loss. The loop that
 * strings them together, and the maths, are on the step's page (`Step`, `Loss`, `Advantages`).
 */
import { Read } from "@r1flow/backend"
import { Batch, Columns, Stage, type Rng } from "@r1flow/core"
import { LogProbs, Transformer } from "@r1flow/model"
import * as tf from "@tensorflow/tfjs"
import type { RecordBatch } from "apache-arrow"
import { Effect } from "effect"
import * as Loss from "./Loss.js"
import * as Metrics from "./Metrics.js"
import * as Train from "./Train.js"
import type * as Update from "./Update.js"

const NAME = "grpo/update"

/**
 * `logprobs` and `entropy` `[B, T−1]` of `ids` `[B, T]` under softmax(logits / τ); `LogProbs.tokenLogProbs`
 * with a temperature. `sharedPrefix`: the rows' common leading tokens, run once; `checkpoint`: activation
 * checkpointing (both `LogProbs.Options`). Differentiable.
 */
export const tokenLogProbs = (
  model: Transformer.Model,
  ids: tf.Tensor2D,
  temperature: number,
  sharedPrefix = 0,
  checkpoint = false
): { logprobs: tf.Tensor2D; entropy: tf.Tensor2D } => LogProbs.tokenLogProbs(model, ids, { temperature, sharedPrefix, checkpoint })

/** Rows `rows` of a row-major `[B, W]` array, packed. */
const takeRows = <A extends Float32Array | Int32Array>(src: A, width: number, rows: ArrayLike<number>): A => {
  const out = new (src.constructor as new (n: number) => A)(rows.length * width)
  for (let i = 0; i < rows.length; i++) out.set(src.subarray(rows[i] * width, (rows[i] + 1) * width), i * width)
  return out
}

/** A rollout batch as the update reads it: flat arrays, truncated rows masked when `maskTruncated`. */
export interface Prepared {
  /** `ids` `[B, T]`; `oldLogprobs` (π_old) `[B, W]`, W = T − 1. */
  readonly data: LogProbs.CompletionBatch
  readonly temperature: number
  readonly advantages: Float32Array // [B]
  readonly mask: Float32Array // [B, W]
  /** TIS weights w `[B, W]` (`truncatedIs`); absent when `tisCap` is unset. */
  readonly isWeights?: Float32Array
  readonly B: number
  readonly W: number
  /** Prompt + completion tokens of the batch, for the throughput. */
  readonly tokens: number
}

const sum = (xs: Int32Array) => xs.reduce((a, b) => a + b, 0)

/** Checks the batch against `Batch.Advantages` and flattens it. */
export const prepare = (input: RecordBatch<Batch.AdvantagesType>, config: Update.Config): Effect.Effect<Prepared, Stage.StageError> =>
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

/** Sequences per forward/backward pass: `microBatchSize`, never more than a minibatch. */
export const microSize = (B: number, config: Update.Config): number =>
  Math.min(config.microBatchSize ?? config.miniBatchSize ?? B, config.miniBatchSize ?? B)

/** `logprobs` and `entropy` `[rows, W]` under `model`; the rows share the template and often the question, so their common prefix runs once. */
const logProbsOf = (p: Prepared, model: Transformer.Model, rows: ArrayLike<number>, checkpoint = false) => {
  const ids = takeRows(p.data.ids, p.data.time, rows)
  const shared = LogProbs.commonPrefixLength(ids, rows.length, p.data.time)
  return tokenLogProbs(model, tf.tensor2d(ids, [rows.length, p.data.time], "int32"), p.temperature, shared, checkpoint)
}

/** π_ref ← π_θ before every `refSyncSteps`-th rollout batch (R1 refreshed its reference this way). */
export const syncReference = (trainer: Update.Trainer): void => {
  const reference = trainer.reference(), every = trainer.config.refSyncSteps, steps = trainer.progress.steps
  if (reference !== null && every > 0 && steps > 0 && steps % every === 0) Transformer.copyWeights(trainer.policy, reference)
}

/** log π `[B, W]` of every row under `model`, micro-batch by micro-batch, without a gradient, as plain floats (one async read each). */
const allLogProbs = (p: Prepared, model: Transformer.Model, micro: number): Effect.Effect<Float32Array> =>
  Effect.gen(function*() {
    const out = new Float32Array(p.B * p.W)
    for (const rows of Train.chunks(Array.from({ length: p.B }, (_, i) => i), micro)) {
      out.set(yield* Read.floatsEffect(tf.tidy(() => logProbsOf(p, model, rows).logprobs)), rows[0] * p.W) // [rows, W]
    }
    return out
  })

/** log π_ref `[B, W]`, once per rollout batch, micro-batch by micro-batch, kept as plain floats; `null` when β = 0. */
export const referenceLogProbs = (p: Prepared, reference: Transformer.Model | null, micro: number): Effect.Effect<Float32Array | null> =>
  reference === null ? Effect.succeed(null) : allLogProbs(p, reference, micro)

/** The IS weights' token mean, max and the fraction the cap bound, over the batch's counted tokens. */
export interface TisStats { readonly mean: number; readonly max: number; readonly fracCapped: number }

/**
 * Truncated importance sampling (`Loss.Config.tisCap` = C): π_old ← the policy's own log-probs at the start of
 * the update (verl's recomputed `old_log_prob`), and w = min(exp(old_trainer − sampler), C) per token, 0 off the
 * mask. Without C, `p` as it is and no forward pass.
 */
export const truncatedIs = (p: Prepared, policy: Transformer.Model, micro: number, cap: number | undefined): Effect.Effect<{ p: Prepared; tis: TisStats | null }> =>
  cap === undefined ? Effect.succeed({ p, tis: null }) : Effect.map(allLogProbs(p, policy, micro), (old) => tisWeights(p, old, cap))

/** w = min(exp(old − sampler), C) per counted token, with π_old ← `old` (`truncatedIs`). */
const tisWeights = (p: Prepared, old: Float32Array, cap: number): { p: Prepared; tis: TisStats } => {
  const sampler = p.data.oldLogprobs
  const w = new Float32Array(old.length)
  let n = 0, sum = 0, max = 0, capped = 0
  for (let i = 0; i < w.length; i++) {
    if (p.mask[i] === 0) continue
    const ratio = Math.exp(old[i] - sampler[i])
    w[i] = Math.min(ratio, cap)
    n++
    sum += w[i]
    max = Math.max(max, w[i])
    if (ratio > cap) capped++
  }
  const stats = { mean: n === 0 ? 0 : sum / n, max, fracCapped: n === 0 ? 0 : capped / n }
  return { p: { ...p, data: { ...p.data, oldLogprobs: old }, isWeights: w }, tis: stats }
}

/** The optimizer steps of one update: μ passes over the rows, each in a fresh order (when minibatches are smaller than B) cut into minibatches. */
export const schedule = (B: number, config: Update.Config, rng: Rng.Stream): Array<Array<number>> => {
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
export const normalizer = (p: Prepared, mini: ReadonlyArray<number>, micro: number): Loss.Normalizer => {
  let tokens = 0
  for (const r of mini) for (let t = 0; t < p.W; t++) tokens += p.mask[r * p.W + t]
  return { sequences: mini.length, tokens, microBatches: Math.ceil(mini.length / micro) }
}

/**
 * The loss of micro-batch `rows` (`Loss.compute` with the minibatch's normaliser); pushes its diagnostics,
 * stacked and kept, onto `pending` for `Metrics.diagnosticsOf` to read once the update is done (no read in the
 * forward). `checkpoint`: activation checkpointing in its forward (`Update.Config.activationCheckpointing`).
 */
export const microLoss = (
  p: Prepared,
  policy: Transformer.Model,
  ref: Float32Array | null,
  config: Loss.Config,
  normalizer: Loss.Normalizer,
  pending: Array<Metrics.Stacked<keyof Metrics.Diagnostics>>,
  checkpoint = false
) => (rows: ReadonlyArray<number>): Train.MicroLoss => () => {
  const { W } = p
  const mask = tf.tensor2d(takeRows(p.mask, W, rows), [rows.length, W])
  const { logprobs, entropy } = logProbsOf(p, policy, rows, checkpoint)
  const out = Loss.compute({
    logprobs,
    oldLogprobs: tf.tensor2d(takeRows(p.data.oldLogprobs, W, rows), [rows.length, W]),
    refLogprobs: ref === null ? null : tf.tensor2d(takeRows(ref, W, rows), [rows.length, W]),
    advantages: tf.tensor1d(takeRows(p.advantages, 1, rows)),
    ...(p.isWeights === undefined ? {} : { isWeights: tf.tensor2d(takeRows(p.isWeights, W, rows), [rows.length, W]) }),
    entropy,
    mask
  }, config, normalizer)
  // Without dual-clip its sum stays 0 (0 · tokens added), and `Metrics.ofUpdate` does not report it.
  const dualClip = out.dualClip ?? tf.scalar(0)
  pending.push(Metrics.stackScalars({ tokens: tf.sum(mask), kl: out.kl, clipLow: out.clipLow, clipHigh: out.clipHigh, clipRegion: out.clipRegion, entropy: tf.sum(tf.mul(entropy, mask)), dualClip }))
  return out.loss
}
