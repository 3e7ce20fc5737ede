/**
 * The supervised loop pretrain and SFT share: draw a batch at the data cursor, take an SFT step,
 * record metrics at the global step, print progress, and checkpoint on schedule. Progress lives in
 * the run context, so a resumed run continues at the same step and cursor.
 */
import { Batch, Columns } from "@r1flow/core"
import { Optimizer, Sft } from "@r1flow/grpo"
import { Effect, Schema } from "effect"
import { splitPerf, StageRunError, type RunContext } from "./Context.js"
import * as Progress from "./Progress.js"

/** A (prompt, completion) token pair; the loss covers the completion. */
export interface Pair {
  readonly prompt: Int32Array
  readonly completion: Int32Array
}

/**
 * Runs `steps` SFT steps of the current policy on `batchSize` pairs each, drawn by `draw(cursor, n)`,
 * continuing from `ctx.progress.stageStep`. The cosine schedule spans the stage unless `totalSteps` says otherwise.
 */
export const sft = (
  ctx: RunContext,
  label: string,
  options: {
    readonly steps: number
    readonly batchSize: number
    readonly logEvery: number
    readonly optimizer: Optimizer.Config
    readonly microBatchSize?: number
    readonly draw: (cursor: number, count: number) => ReadonlyArray<Pair>
  }
): Effect.Effect<void, StageRunError> =>
  Effect.scoped(
    Effect.gen(function*() {
      const config = yield* Schema.decodeUnknownEffect(Sft.Config)({
        optimizer: { ...options.optimizer, totalSteps: options.optimizer.totalSteps ?? options.steps },
        padId: ctx.tokenizer.specialIds.eot,
        ...(options.microBatchSize !== undefined ? { microBatchSize: options.microBatchSize } : {})
      }).pipe(
        Effect.mapError((e) => new StageRunError({ stage: label, message: e.message }))
      )
      const trainer = yield* Sft.make(ctx.policy, config, ctx.rng.stream(`${label}/minibatch`))
      if (ctx.resume !== null) {
        const saved = ctx.resume
        ctx.resume = null
        if (saved.trainer !== null) yield* trainer.importState(saved.trainer).pipe(Effect.mapError((e) => new StageRunError({ stage: label, message: `resuming: ${e.message}` })))
      }
      const report = Progress.reporter(label, options.steps, ctx.progress.stageStep, ctx.log, options.logEvery)
      let tokens = 0
      for (let s = ctx.progress.stageStep; s < options.steps; s++) {
        const pairs = options.draw(ctx.progress.cursor, options.batchSize)
        const batch = Batch.fromData(Sft.Input, {
          prompt_ids: Columns.int32ListFromRows(pairs.map((d) => d.prompt)),
          completion_ids: Columns.int32ListFromRows(pairs.map((d) => d.completion))
        })
        const m = yield* trainer.step(batch).pipe(Effect.mapError((e) => new StageRunError({ stage: label, message: e.message, cause: e })))
        ctx.progress.cursor += options.batchSize
        ctx.progress.stageStep = s + 1
        ctx.progress.step++
        tokens += m.num_tokens ?? 0
        const { metrics, perf } = splitPerf(Object.fromEntries(Object.entries(m).map(([k, v]) => [`${label}/${k}`, v])))
        yield* ctx.metrics.record(ctx.progress.step, metrics)
        ctx.perf(ctx.progress.step, perf)
        report(s, [["loss", m.loss], ["lr", m.learning_rate], ["grad_norm", m.grad_norm]], tokens)
        if (ctx.checkpointEvery > 0 && (s + 1) % ctx.checkpointEvery === 0 && s + 1 < options.steps) {
          yield* ctx.checkpoint({ trainer: trainer.exportState(), reference: null })
        }
      }
    })
  )
