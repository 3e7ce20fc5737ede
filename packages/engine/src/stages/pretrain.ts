/**
 * `pretrain`: next-token prediction on the run's base corpus, to make a small "base" model.
 *
 * Each document is the templated question followed by the worked solution as the corpus wrote it
 * (control tags as control tokens, end-of-turn after finished solutions). The loss covers every
 * token after the first, as in pretraining; flawed and unfinished solutions are learned too, which is
 * what leaves the base model imperfect.
 */
import { Optimizer } from "@r1flow/grpo"
import { Effect, Schema } from "effect"
import { Run, StageRunError } from "../Context.js"
import * as Prompts from "../Prompts.js"
import * as RecipeStage from "../RecipeStage.js"
import * as Training from "../Training.js"

/** Pretrain config. */
export const Config = Schema.Struct({
  steps: Schema.Int.check(Schema.isGreaterThan(0)),
  batchSize: Schema.Int.check(Schema.isGreaterThan(0)),
  optimizer: Optimizer.Config.pipe(Schema.withDecodingDefaultKey(Effect.succeed({}))),
  /** Sequences per forward/backward pass (gradient accumulation); default the whole batch. */
  microBatchSize: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThan(0))),
  /** Activation checkpointing: each transformer block reruns in the backward instead of keeping its activations; the same gradients. */
  activationCheckpointing: Schema.optionalKey(Schema.Boolean),
  logEvery: Schema.Int.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(25)))
})
/** Pretrain config. */
export type Config = typeof Config.Type

const plugin: RecipeStage.StagePlugin<typeof Config.Type> = RecipeStage.define({
  name: "pretrain",
  version: "0.1.0",
  description: "next-token pretraining on the task's base corpus (makes the base model)",
  config: Config,
  make: (config) => ({
    kind: "pretrain",
    run: (label, resume) =>
      Effect.gen(function*() {
        const ctx = yield* Run
        if (ctx.data.corpus.length === 0) {
          return yield* new StageRunError({ stage: label, message: "the task has no base corpus to pretrain on (generated tasks only: arithmetic, countdown)" })
        }
        const eot = ctx.tokenizer.specialIds.eot
        const max = ctx.policy.config.maxSeqLen
        let cut = 0
        const docs = ctx.data.corpus.map((row) => {
          const prompt = ctx.promptIds(row.prompt)
          const completion = ctx.tokenizer.encodeTrusted(row.completion)
          const finished = row.completion.trimEnd().endsWith("</answer>")
          const doc = new Int32Array(prompt.length + completion.length + (finished ? 1 : 0))
          doc.set(prompt)
          doc.set(completion, prompt.length)
          if (finished) doc[doc.length - 1] = eot
          if (doc.length > max) cut++
          return doc.length > max ? doc.subarray(0, max) : doc
        })
        if (ctx.progress.stageStep === 0) ctx.log(`[${label}] base model: pretrained here, from the seeded initialisation, on ${docs.length} corpus solutions (${ctx.data.corpus.filter((r) => !r.correct).length} deliberately flawed)`)
        if (cut > 0) ctx.log(`[${label}] ${cut} of ${docs.length} documents were longer than maxSeqLen ${max} and were cut`)
        // Next-token loss on every token after the first: the first token is the "prompt".
        const pairs = docs.map((d) => ({ prompt: d.subarray(0, 1), completion: d.subarray(1) }))
        yield* Training.sft(ctx, label, config, Prompts.sampler(pairs, ctx.recipe.seed, `${label}/data`), resume)
      })
  })
})

export default plugin
