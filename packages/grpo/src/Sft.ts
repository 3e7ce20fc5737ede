/**
 * Supervised fine-tuning on (prompt, completion) pairs, for the cold-start, rejection-sampling and
 * distillation stages of R1: next-token cross-entropy on the completion tokens only (prompt tokens are
 * context, not targets), as a token mean over the whole optimizer-step batch:
 *
 *   L = − Σ_{i,t} m_{i,t} log π_θ(x_{i,t+1} | x_{i,≤t}) / Σ_{i,t} m_{i,t}
 *
 * m = 1 where x_{t+1} is a completion token. Micro-batches each contribute their token sum over the
 * step's total, so accumulation gives the same gradient as one big batch. Shares AdamW, clipping and the
 * non-finite guard with the GRPO update (`Train.optimizerStep`).
 */
import { Batch, Columns, Stage, type Rng } from "@r1flow/core"
import { LogProbs, Transformer } from "@r1flow/model"
import * as tf from "@tensorflow/tfjs"
import { Field, Schema as ArrowSchema, type List, type Int32, type RecordBatch } from "apache-arrow"
import { Effect, Schema, type Scope } from "effect"
import * as Guard from "./Guard.js"
import * as Metrics from "./Metrics.js"
import * as Optimizer from "./Optimizer.js"
import * as Train from "./Train.js"

/** Columns an SFT batch needs (a rollouts or prompts-plus-completions batch has them). */
export type InputType = { prompt_ids: List<Int32>; completion_ids: List<Int32> }
/** Input schema of the SFT step. */
export const Input: ArrowSchema<InputType> = new ArrowSchema([
  new Field("prompt_ids", Batch.Int32List(), false),
  new Field("completion_ids", Batch.Int32List(), false)
])

/** SFT configuration. */
export const Config = Schema.Struct({
  optimizer: Optimizer.Config.pipe(Schema.withDecodingDefaultKey(Effect.succeed({}))),
  guard: Guard.Config.pipe(Schema.withDecodingDefaultKey(Effect.succeed({}))),
  /** Sequences per optimizer step; unset: the whole batch. */
  miniBatchSize: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThan(0))),
  /** Sequences per forward/backward pass; unset: the minibatch. */
  microBatchSize: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThan(0))),
  /** Activation checkpointing in the forward (`LogProbs.Options.checkpoint`): blocks rerun in the backward; the same gradients. */
  activationCheckpointing: Schema.Boolean.pipe(Schema.withDecodingDefaultKey(Effect.succeed(false))),
  padId: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(0)))
})
/** SFT configuration. */
export type Config = typeof Config.Type

/** Padded `[B, T]` ids and the `[B, T−1]` completion-target mask. */
export interface Tokens {
  readonly ids: Int32Array
  readonly mask: Float32Array
  readonly batch: number
  readonly time: number
}

/** prompt ++ completion per row, right-padded; mask[b, t] = 1 where ids[b, t+1] is a completion token. */
export const tokens = (batch: RecordBatch<InputType>, padId: number): Tokens => {
  const prompts = Columns.int32List(batch.getChild("prompt_ids")!)
  const completions = Columns.int32List(batch.getChild("completion_ids")!)
  const B = batch.numRows
  let time = 2
  for (let b = 0; b < B; b++) time = Math.max(time, Columns.rowLength(prompts, b) + Columns.rowLength(completions, b))
  const ids = new Int32Array(B * time).fill(padId)
  const mask = new Float32Array(B * (time - 1))
  for (let b = 0; b < B; b++) {
    const p = Columns.row(prompts, b), c = Columns.row(completions, b)
    if (p.length === 0 && c.length > 0) throw new RangeError(`row ${b}: a completion needs at least one prompt token before it`)
    ids.set(p, b * time)
    ids.set(c, b * time + p.length)
    const start = b * (time - 1) + p.length - 1
    mask.fill(1, start, start + c.length)
  }
  return { ids, mask, batch: B, time }
}

/** The SFT trainer. */
export interface Trainer {
  readonly config: Config
  readonly policy: Transformer.Model
  readonly optimizer: Optimizer.AdamW
  readonly guard: Guard.Guard
  /** One pass over `batch` (one or more optimizer steps); `loss`, `grad_norm`, `learning_rate`, … */
  /** Everything besides the weights a resumed run needs: optimizer moments and step, counters, guard. */
  readonly exportState: () => Effect.Effect<Train.TrainerState>
  /** Restores `exportState`'s result (the weights are restored separately). */
  readonly importState: (state: Train.TrainerState) => Effect.Effect<void, Optimizer.StateError>
  readonly step: (batch: RecordBatch<InputType>) => Effect.Effect<Record<string, number>, Stage.StageError | Guard.NonFiniteError>
}

const NAME = "grpo/sft"

/** The loss of micro-batch `rows`: −Σ m · log π_θ over its tokens, divided by the minibatch's tokens (so micro-batches sum to the token mean). */
const microLoss = (policy: Transformer.Model, data: Tokens, stepTokens: number, checkpoint: boolean) => (rows: ReadonlyArray<number>): Train.MicroLoss => () => {
  const { time } = data
  const W = time - 1
  const ids = new Int32Array(rows.length * time)
  const mask = new Float32Array(rows.length * W)
  rows.forEach((r, i) => {
    ids.set(data.ids.subarray(r * time, (r + 1) * time), i * time)
    mask.set(data.mask.subarray(r * W, (r + 1) * W), i * W)
  })
  // Rows share the prompt template: their common prefix runs once per micro-batch.
  const sharedPrefix = LogProbs.commonPrefixLength(ids, rows.length, time)
  const { logprobs } = LogProbs.tokenLogProbs(policy, tf.tensor2d(ids, [rows.length, time], "int32"), { sharedPrefix, checkpoint })
  return tf.div(tf.neg(tf.sum(tf.mul(logprobs, tf.tensor2d(mask, [rows.length, W])))), Math.max(stepTokens, 1)) as tf.Scalar
}

/** The step's metrics: means over its applied optimizer steps, tokens trained on, throughput. */
const metricsOf = (applied: ReadonlyArray<Train.StepResult>, t: { readonly optimizer: Optimizer.AdamW; readonly guard: Guard.Guard; readonly trained: number; readonly throughput: number }) => {
  const mean = (xs: Array<number>) => (xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length)
  return {
    [Metrics.loss]: mean(applied.map((r) => r.loss)),
    [Metrics.gradNorm]: mean(applied.map((r) => r.gradNorm)),
    [Metrics.learningRate]: applied.length > 0 ? applied[applied.length - 1].learningRate : t.optimizer.currentLearningRate(),
    [Metrics.optimizerSteps]: applied.length,
    [Metrics.skippedSteps]: t.guard.skipped(),
    [Metrics.numTokens]: t.trained,
    [Metrics.throughput]: t.throughput
  }
}

/** Builds the SFT trainer around `policy` (trained in place); AdamW is freed with the scope. `rng` shuffles rows into minibatches. */
export const make = (policy: Transformer.Model, config: Config, rng: Rng.Stream): Effect.Effect<Trainer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const optimizer = yield* Optimizer.acquire(Transformer.trainableWeights(policy), config.optimizer)
    const guard = Guard.make(config.guard)
    let updates = 0
    const step = (input: RecordBatch<InputType>) =>
      Effect.gen(function*() {
        const t0 = performance.now()
        const batch = yield* Stage.check(NAME, Input, input)
        const data = yield* Effect.try({
          try: () => tokens(batch, config.padId),
          catch: (cause) => new Stage.StageError({ stage: NAME, message: cause instanceof Error ? cause.message : String(cause), cause })
        })
        const { batch: B, time } = data
        const W = time - 1
        const miniSize = config.miniBatchSize ?? B
        const micro = Math.min(config.microBatchSize ?? miniSize, miniSize)
        const order = Array.from({ length: B }, (_, i) => i)
        if (miniSize < B) rng.shuffle(order)
        const applied: Array<Train.StepResult> = []
        let trained = 0
        for (const mini of Train.chunks(order, miniSize)) {
          let stepTokens = 0
          for (const r of mini) for (let t = 0; t < W; t++) stepTokens += data.mask[r * W + t]
          trained += stepTokens
          const losses = Train.chunks(mini, micro).map(microLoss(policy, data, stepTokens, config.activationCheckpointing))
          const result = yield* Train.optimizerStep(optimizer, guard, updates, losses)
          updates++
          if (result.applied) {
            applied.push(result)
            guard.good(updates - 1, { [Metrics.loss]: result.loss, [Metrics.gradNorm]: result.gradNorm, [Metrics.learningRate]: result.learningRate })
          }
        }
        const seconds = (performance.now() - t0) / 1000
        return metricsOf(applied, { optimizer, guard, trained, throughput: (B * time) / seconds })
      })
    return {
      config,
      policy,
      optimizer,
      guard,
      exportState: () => Effect.map(optimizer.exportState(), (o) => ({ optimizer: o, steps: updates, updates, guard: guard.exportState() })),
      importState: (state) =>
        Effect.map(optimizer.importState(state.optimizer), () => {
          updates = state.updates
          guard.importState(state.guard)
        }),
      step
    } satisfies Trainer
  })
