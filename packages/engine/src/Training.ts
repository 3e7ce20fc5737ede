/**
 * The supervised loop pretrain and SFT share: draw a batch at the data cursor, take an SFT step,
 * record metrics at the global step, print progress, and checkpoint on schedule. Progress lives in
 * the run context, so a resumed run continues at the same step and cursor.
 */
import { Batch, Columns, Metrics, Rng } from "@r1flow/core"
import { type Optimizer, Sft } from "@r1flow/grpo"
import { Effect, Option, Schema } from "effect"
import { splitPerf, StageRunError, type Resumed, type RunContext } from "./Context.js"
import * as Progress from "./Progress.js"

/** A (prompt, completion) token pair; the loss covers the completion. */
export interface Pair {
  readonly prompt: Int32Array
  readonly completion: Int32Array
}

/** The loop's part of a pretrain or SFT stage's config. */
export interface Options {
  readonly steps: number
  readonly batchSize: number
  readonly logEvery: number
  readonly optimizer: Optimizer.Config
  readonly microBatchSize?: number
  /** Activation checkpointing in the forward (`Sft.Config.activationCheckpointing`); default false. */
  readonly activationCheckpointing?: boolean
}

/**
 * The trainer's config: the stage's optimizer with the cosine schedule spanning the stage unless
 * `totalSteps` says otherwise, and the run's `padId` (the tokenizer's end of text). Decoded only to fill
 * `Sft.Config`'s defaults: its parts were decoded with the stage's config, so it cannot fail but by a bug.
 */
const trainerConfig = (label: string, options: Options, padId: number): Effect.Effect<Sft.Config, StageRunError> =>
  Schema.decodeEffect(Sft.Config)({
    optimizer: { ...options.optimizer, totalSteps: options.optimizer.totalSteps ?? options.steps },
    padId,
    ...(options.microBatchSize !== undefined ? { microBatchSize: options.microBatchSize } : {}),
    ...(options.activationCheckpointing !== undefined ? { activationCheckpointing: options.activationCheckpointing } : {})
  }).pipe(Effect.mapError((e) => new StageRunError({ stage: label, message: e.message })))

/**
 * Runs `options.steps` SFT steps of the current policy on `batchSize` pairs each, drawn by `draw(cursor, n)`,
 * continuing from `ctx.progress.stageStep` and, when resumed inside the stage, from the trainer state in `resume`.
 */
export const sft = (
  ctx: RunContext,
  label: string,
  options: Options,
  draw: (cursor: number, count: number) => ReadonlyArray<Pair>,
  resume: Resumed
): Effect.Effect<void, StageRunError, Rng.Rng | Metrics.Metrics> =>
  Effect.scoped(
    Effect.gen(function*() {
      const rng = yield* Rng.Rng
      const metrics = yield* Metrics.Metrics
      const config = yield* trainerConfig(label, options, ctx.tokenizer.specialIds.eot)
      const trainer = yield* Sft.make(ctx.policy, config, rng.stream(`${label}/minibatch`))
      const saved = Option.getOrNull(resume)?.trainer ?? null
      if (saved !== null) yield* trainer.importState(saved).pipe(Effect.mapError((e) => new StageRunError({ stage: label, message: `resuming: ${e.message}` })))
      const report = Progress.reporter(label, options.steps, ctx.progress.stageStep, ctx.log, options.logEvery)
      let tokens = 0
      for (let s = ctx.progress.stageStep; s < options.steps; s++) {
        const pairs = draw(ctx.progress.cursor, options.batchSize)
        const batch = Batch.fromData(Sft.Input, {
          prompt_ids: Columns.int32ListFromRows(pairs.map((d) => d.prompt)),
          completion_ids: Columns.int32ListFromRows(pairs.map((d) => d.completion))
        })
        const m = yield* trainer.step(batch).pipe(Effect.mapError((e) => new StageRunError({ stage: label, message: e.message, cause: e })))
        ctx.progress.cursor += options.batchSize
        ctx.progress.stageStep = s + 1
        ctx.progress.step++
        tokens += m.num_tokens ?? 0
        const { metrics: values, perf } = splitPerf(Object.fromEntries(Object.entries(m).map(([k, v]) => [`${label}/${k}`, v])))
        yield* metrics.record(ctx.progress.step, values)
        ctx.perf(ctx.progress.step, perf)
        report(s, [["loss", m.loss], ["lr", m.learning_rate], ["grad_norm", m.grad_norm]], tokens)
        if (ctx.checkpointEvery > 0 && (s + 1) % ctx.checkpointEvery === 0 && s + 1 < options.steps) {
          yield* ctx.checkpoint({ trainer: yield* trainer.exportState(), reference: null })
        }
      }
    })
  )
