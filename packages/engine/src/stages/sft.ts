/**
 * `sft`: supervised fine-tuning on (prompt, completion) pairs, loss on completion tokens only.
 * Serves R1's cold start (`source: corpus`, the correct worked solutions), rejection-sampling SFT and
 * distillation (`source: set`, the set a `rejection-sampling` stage wrote), or any Arrow IPC file
 * with `prompt_ids` / `completion_ids` columns (`source: file`).
 */
import { Columns, Stage } from "@r1flow/core"
import { Optimizer, Sft } from "@r1flow/grpo"
import { tableFromIPC } from "apache-arrow"
import { Effect, Schema } from "effect"
import { readFileSync } from "node:fs"
import { Run, StageRunError, type RunContext } from "../Context.js"
import * as Prompts from "../Prompts.js"
import * as RecipeStage from "../RecipeStage.js"
import * as Training from "../Training.js"
import * as RejectionSampling from "./rejection-sampling.js"

/** SFT config. */
export const Config = Schema.Struct({
  source: Schema.Union([
    Schema.Struct({ kind: Schema.Literal("corpus"), onlyCorrect: Schema.Boolean.pipe(Schema.withDecodingDefaultKey(Effect.succeed(true))), limit: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThan(0))) }),
    Schema.Struct({ kind: Schema.Literal("set"), stage: Schema.String }),
    Schema.Struct({ kind: Schema.Literal("file"), path: Schema.String })
  ]),
  steps: Schema.Int.check(Schema.isGreaterThan(0)),
  batchSize: Schema.Int.check(Schema.isGreaterThan(0)),
  optimizer: Optimizer.Config.pipe(Schema.withDecodingDefaultKey(Effect.succeed({}))),
  microBatchSize: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThan(0))),
  /** Activation checkpointing: each transformer block reruns in the backward instead of keeping its activations; the same gradients. */
  activationCheckpointing: Schema.optionalKey(Schema.Boolean),
  logEvery: Schema.Int.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(25)))
})
/** SFT config. */
export type Config = typeof Config.Type

const pairs = (ctx: RunContext, label: string, source: Config["source"]): Effect.Effect<Array<Training.Pair>, StageRunError> =>
  Effect.gen(function*() {
    if (source.kind === "corpus") {
      const eot = ctx.tokenizer.specialIds.eot
      const rows = ctx.data.corpus.filter((r) => !source.onlyCorrect || r.correct).slice(0, source.limit)
      return rows.map((r) => {
        const c = ctx.tokenizer.encodeTrusted(r.completion)
        const withEot = new Int32Array(c.length + 1)
        withEot.set(c)
        withEot[c.length] = eot
        return { prompt: ctx.promptIds(r.prompt), completion: withEot }
      })
    }
    const path = source.kind === "set" ? RejectionSampling.pathOf(ctx.dir.root, source.stage) : source.path
    const table = yield* Effect.try({
      try: () => tableFromIPC(readFileSync(path)),
      catch: (e) => new StageRunError({ stage: label, message: `cannot read the SFT set ${path}: ${(e as Error).message}` })
    })
    const out: Array<Training.Pair> = []
    for (const b of table.batches) {
      const batch = yield* Stage.check(label, Sft.Input, b).pipe(Effect.mapError((e) => new StageRunError({ stage: label, message: `${path}: ${e.message}` })))
      const p = Columns.int32List(batch.getChild("prompt_ids")!)
      const c = Columns.int32List(batch.getChild("completion_ids")!)
      for (let i = 0; i < batch.numRows; i++) out.push({ prompt: Columns.row(p, i), completion: Columns.row(c, i) })
    }
    return out
  })

const plugin: RecipeStage.StagePlugin<typeof Config.Type> = RecipeStage.define({
  name: "sft",
  version: "0.1.0",
  description: "supervised fine-tuning on completions (cold start, rejection-sampling SFT, distillation)",
  config: Config,
  make: (config) => ({
    kind: "sft",
    run: (label, resume) =>
      Effect.gen(function*() {
        const ctx = yield* Run
        const data = yield* pairs(ctx, label, config.source)
        if (data.length === 0) return yield* new StageRunError({ stage: label, message: "the SFT source has no rows" })
        const max = ctx.policy.config.maxSeqLen
        const fits = data.filter((d) => d.prompt.length + d.completion.length <= max)
        if (fits.length < data.length) ctx.log(`[${label}] skipped ${data.length - fits.length} of ${data.length} pairs longer than maxSeqLen ${max}`)
        if (fits.length === 0) return yield* new StageRunError({ stage: label, message: `every pair is longer than maxSeqLen ${max}` })
        yield* Training.sft(ctx, label, config, Prompts.sampler(fits, ctx.recipe.seed, `${label}/data`), resume)
      })
  })
})

export default plugin
