/**
 * The rollout stage: prompts → rollouts. Each prompt row becomes G rows (its group): the prompt's
 * columns repeated, `id` = `${promptId}#${k}`, and the sampled completion, its token ids, the
 * sampling log-probs (at the sampling temperature; see `Generate`), finish reason and lengths. The
 * temperature is recorded in the schema metadata (`Batch.rolloutsAt`), so the trainer scores π_θ at
 * the same τ.
 *
 * Because the row count changes, the output batch is built whole rather than by adding columns; the
 * prompt columns are carried over unchanged. `completion` is `decode` of the completion ids without a
 * final stop token (the token stays in `completion_ids`, so the policy learns to stop). The stage takes
 * `decode` and `stopIds` rather than a tokenizer, so it does not depend on the tokenizer package.
 */
import { Batch, Columns, Stage, type Rng } from "@r1flow/core"
import type { RecordBatch, Vector } from "apache-arrow"
import { Effect } from "effect"
import * as Generate from "./Generate.js"
import type * as Transformer from "./Transformer.js"

/** How to sample rollouts: `Generate`'s options (the prompts come from the batch), plus decoding and the stream. */
export interface Options extends Omit<Generate.Options, "prompts"> {
  /** Token ids → text, for the `completion` column. */
  readonly decode: (ids: Int32Array) => string
  /** The stream sampling draws from (advanced by every batch). */
  readonly rng: Rng.Stream
}

/** The stage's name in errors and logs. */
export const NAME = "rollout"

const strings = (v: Vector | null, n: number): Array<string | null> => {
  const out: Array<string | null> = []
  for (let i = 0; i < n; i++) out.push(v === null ? null : (v.get(i) as string | null))
  return out
}

const repeat = <A>(xs: ReadonlyArray<A>, g: number): Array<A> => xs.flatMap((x) => Array<A>(g).fill(x))

/** Samples G completions per prompt row and returns the rollouts batch (async: sampling reads its logits back with `data()`). */
export const run = async (model: Transformer.Model, options: Options, prompts: RecordBatch<Batch.PromptsType>): Promise<RecordBatch<Batch.RolloutsType>> => {
  const n = prompts.numRows, G = options.groupSize
  const promptIds = Columns.int32List(prompts.getChild("prompt_ids")!)
  const promptRows = Array.from({ length: n }, (_, i) => Columns.row(promptIds, i))
  const r = await Generate.sample(model, { ...options, prompts: promptRows }, options.rng)
  const ids = strings(prompts.getChild("id"), n)
  const groupIds = Columns.int32Values(prompts.getChild("group_id")!)
  const stop = new Set(options.stopIds)
  const text = r.completions.map((c, i) => options.decode(r.finishReasons[i] === "stop" && stop.has(c[c.length - 1]) ? c.subarray(0, c.length - 1) : c))
  // The template's completion prefix travels with the prompts: rewards read the completion after it.
  return Batch.fromData(Batch.withCompletionPrefix(Batch.rolloutsAt(options.temperature), Batch.completionPrefix(prompts.schema)), {
    id: Columns.makeUtf8(ids.flatMap((id) => Array.from({ length: G }, (_, k) => `${id}#${k}`))),
    group_id: Columns.makeInt32(Int32Array.from(repeat(Array.from(groupIds), G))),
    prompt: Columns.makeUtf8(repeat(strings(prompts.getChild("prompt"), n), G)),
    prompt_ids: Columns.int32ListFromRows(repeat(promptRows, G)),
    answer: Columns.makeUtf8(repeat(strings(prompts.getChild("answer"), n), G)),
    metadata: Columns.makeUtf8(repeat(strings(prompts.getChild("metadata"), n), G)),
    completion: Columns.makeUtf8(text),
    completion_ids: Columns.int32ListFromRows(r.completions),
    logprobs: Columns.float32ListFromRows(r.logprobs),
    finish_reason: Columns.makeUtf8(r.finishReasons),
    prompt_length: Columns.makeInt32(Int32Array.from(repeat(promptRows.map((p) => p.length), G))),
    completion_length: Columns.makeInt32(Int32Array.from(r.completions, (c) => c.length))
  })
}

/** The stage's name and schemas: what a pipeline is checked against before there is a policy to sample from. */
export const signature: Stage.Signature = { name: NAME, input: Batch.Prompts, output: Batch.Rollouts }

/** The rollout stage over `model` (a core `Stage` from `Batch.Prompts` to `Batch.Rollouts`). */
export const stage = (model: Transformer.Model, options: Options): Stage.Stage<Batch.PromptsType, Batch.RolloutsType> =>
  Stage.make({
    name: NAME,
    input: Batch.Prompts,
    output: Batch.Rollouts,
    transform: (batch) =>
      Effect.tryPromise({
        try: () => run(model, options, batch),
        catch: (cause) => new Stage.StageError({ stage: NAME, message: cause instanceof Error ? cause.message : String(cause), cause })
      })
  })
