/**
 * `sft`: supervised fine-tuning on (prompt, completion) pairs, loss on completion tokens only.
 * Serves R1's cold start (`source: cold-start`, a readable long chain of thought with reflection and
 * verification per train row of a generated task, `ColdStart`; or `source: corpus`, the correct
 * worked solutions), rejection-sampling SFT and distillation (`source: set`, the set a
 * `rejection-sampling` stage wrote), or any Arrow IPC file with `prompt_ids` / `completion_ids`
 * columns (`source: file`).
 */
import { Columns, Stage } from "@r1flow/core"
import { ColdStart, type Task } from "@r1flow/datasets"
import { Optimizer, Sft } from "@r1flow/grpo"
import { Template } from "@r1flow/tokenizer"
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
    /**
     * R1's cold-start set, built from the run's train rows (at most `limit` chains) and written to `sft/<label>.arrow`;
     * `work`: the chains' notation (`ColdStart.Work`: `"prose"`, the default, for a pretrained LLM; `"corpus"` for a
     * model pretrained on the built-in corpus, whose worked notation it then keeps).
     */
    Schema.Struct({
      kind: Schema.Literal("cold-start"),
      limit: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThan(0))),
      work: Schema.Literals(["prose", "corpus"]).pipe(Schema.withDecodingDefaultKey(Effect.succeed("prose" as const)))
    }),
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

/** A completion we wrote, as ids ending with end-of-text (the model learns to stop). */
const completionIds = (ctx: RunContext, completion: string): Int32Array => {
  const c = ctx.tokenizer.encodeTrusted(completion)
  const withEot = new Int32Array(c.length + 1)
  withEot.set(c)
  withEot[c.length] = ctx.tokenizer.specialIds.eot
  return withEot
}

/**
 * The run's train rows in the order a mixture draws them by weight (`Prompts.taskSampler`, distinct rows
 * kept at their first draw), so a cold-start `limit` takes each task at its share: the train rows are
 * stored task after task, and their head is the first task's alone.
 */
const drawOrder = (ctx: RunContext, label: string): ReadonlyArray<Task.Row> => {
  const rows = ctx.data.train
  const draw = Prompts.taskSampler(ctx.recipe.task, rows, ctx.recipe.seed, `${label}/cold-start`)
  const seen = new Set<Task.Row>()
  // a task of small weight is drawn rarely; past the cap its undrawn rows follow in stored order
  for (let c = 0; c < 8 * rows.length && seen.size < rows.length; c += rows.length) {
    for (const row of draw(c, rows.length)) seen.add(row)
  }
  for (const row of rows) seen.add(row)
  return [...seen]
}

/**
 * The cold-start set of the run's train rows (drawn by task weight), tokenized like the corpus and written to
 * `sft/<label>.arrow` (`RejectionSampling.SftSet`, so `source: set` can reuse it). Completions leave
 * out what the prompt template opens (`<think>` when it ends the prompt inside the reasoning).
 */
const coldStart = (ctx: RunContext, label: string, limit: number | undefined, work: ColdStart.Work): Effect.Effect<Array<Training.Pair>, StageRunError> =>
  Effect.gen(function*() {
    const completionPrefix = yield* Effect.try({
      try: () => Template.promptPrefix(ctx.tokenizer, ctx.recipe.template ?? "r1-zero"),
      catch: (e) => new StageRunError({ stage: label, message: `the prompt template: ${(e as Error).message}` })
    })
    const set = ColdStart.build(drawOrder(ctx, label), { seed: ctx.recipe.seed, completionPrefix, limit, work })
    const skipped = set.skipped.map((s) => `${s.count} ${s.task} (${s.reason})`).join("; ")
    if (skipped !== "") ctx.log(`[${label}] cold start: skipped ${skipped}`)
    if (set.examples.length === 0) {
      return yield* new StageRunError({ stage: label, message: `no train row has a cold-start chain of thought: skipped ${skipped}` })
    }
    const pairs = set.examples.map((e) => ({ prompt: ctx.promptIds(e.prompt), completion: completionIds(ctx, e.completion) }))
    const path = yield* RejectionSampling.writeSftSet(ctx.dir.root, label, {
      prompt: set.examples.map((e) => e.prompt),
      completion: set.examples.map((e) => e.completion),
      promptIds: pairs.map((p) => p.prompt),
      completionIds: pairs.map((p) => p.completion),
      // every cold-start row reasons before it answers
      kind: set.examples.map(() => "reasoning")
    })
    ctx.log(`[${label}] cold start: ${pairs.length} chains of thought from ${ctx.data.train.length} train rows → ${path}`)
    return pairs
  })

const pairs = (ctx: RunContext, label: string, source: Config["source"]): Effect.Effect<Array<Training.Pair>, StageRunError> =>
  Effect.gen(function*() {
    if (source.kind === "corpus") {
      const rows = ctx.data.corpus.filter((r) => !source.onlyCorrect || r.correct).slice(0, source.limit)
      return rows.map((r) => ({ prompt: ctx.promptIds(r.prompt), completion: completionIds(ctx, r.completion) }))
    }
    if (source.kind === "cold-start") return yield* coldStart(ctx, label, source.limit, source.work)
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
