/**
 * The run's data, from the recipe's `task`: generated (arithmetic, countdown: train and held-out
 * splits plus a base corpus of worked solutions) or loaded (GSM8K, JSONL, Parquet files).
 */
import { Arithmetic, Countdown, Loaders, type Task } from "@r1flow/datasets"
import type { Codec } from "@r1flow/tokenizer"
import { Effect, Schema } from "effect"
import { Buffer } from "node:buffer"
import type { Data, RunContext } from "./Context.js"
import type * as Recipe from "./Recipe.js"

/** The task's data could not be made or read. */
export class DataError extends Schema.TaggedError<DataError>()("DataError", {
  task: Schema.String,
  message: Schema.String
}) {}

const wrap = (task: string) => (e: { readonly message: string }) => new DataError({ task, message: e.message })

/** Where a split's rows came from: its file and each row's 1-based line (Parquet: row), for errors found after loading. */
export interface Origin {
  readonly file: string
  readonly unit: "line" | "row"
  readonly lines: ReadonlyArray<number>
}

/** The run's data, with the origin of each loaded split (generated splits have none). */
export interface Built extends Data {
  readonly origins: { readonly train?: Origin; readonly test?: Origin }
}

type Split = "train" | "test"

/**
 * A loaded split, refused when it holds no problem: a run over an empty train set trains on nothing
 * and an empty test set gives accuracies over 0 problems, both reported as success.
 */
const loadedSplit = (task: Recipe.Task, split: Split, file: string, loaded: Loaders.Loaded) =>
  Effect.gen(function*() {
    const unit = task.kind === "parquet" ? "row" : "line"
    if (loaded.rows.length > 0) return { rows: loaded.rows as ReadonlyArray<Task.Row>, origin: { file, unit, lines: loaded.lines } satisfies Origin }
    const first = loaded.issues[0]
    const why = first === undefined ? "" : ` (all ${loaded.skipped} records were skipped under onError "skip"; the first, ${unit} ${first.line}: ${first.reason})`
    return yield* new DataError({ task: task.kind, message: `${file}: the ${split} set has no problems${why}` })
  })

const generatedSplit = <A>(task: Recipe.Task, split: Split, rows: ReadonlyArray<A>) =>
  rows.length > 0 ? Effect.succeed(rows) : Effect.fail(new DataError({ task: task.kind, message: `the generated ${task.kind} ${split} set has no problems` }))

/** Builds (or loads) train, held-out and corpus rows for `task`; `corpusSize` 0 skips the corpus. An empty train or held-out set is a `DataError` naming its file. */
export const build = (task: Recipe.Task, seed: number, options: { readonly corpusSize: number; readonly wrongFraction?: number }): Effect.Effect<Built, DataError> =>
  Effect.gen(function*() {
    switch (task.kind) {
      case "arithmetic": {
        const base = { seed, digits: task.digits, ops: task.ops }
        const train = yield* generatedSplit(task, "train", yield* Arithmetic.generate({ ...base, count: task.train, split: "train" }))
        const test = yield* generatedSplit(task, "test", yield* Arithmetic.generate({ ...base, count: task.test, split: "test" }))
        const corpus = options.corpusSize > 0 ? yield* Arithmetic.corpus({ ...base, seed: seed + 1, count: options.corpusSize, wrongFraction: options.wrongFraction }) : []
        return { train, test, corpus, origins: {} }
      }
      case "countdown": {
        const base = { seed, numbers: task.numbers, maxTarget: task.maxTarget }
        const train = yield* generatedSplit(task, "train", yield* Countdown.generate({ ...base, count: task.train, split: "train" }))
        const test = yield* generatedSplit(task, "test", yield* Countdown.generate({ ...base, count: task.test, split: "test" }))
        const corpus = options.corpusSize > 0 ? yield* Countdown.corpus({ ...base, seed: seed + 1, count: options.corpusSize, wrongFraction: options.wrongFraction }) : []
        return { train, test, corpus, origins: {} }
      }
      case "gsm8k": {
        const train = yield* loadedSplit(task, "train", task.train, yield* Loaders.gsm8k(task.train, { onError: task.onError ?? "fail" }))
        const test = yield* loadedSplit(task, "test", task.test, yield* Loaders.gsm8k(task.test, { onError: task.onError ?? "fail" }))
        return { train: train.rows, test: test.rows, corpus: [], origins: { train: train.origin, test: test.origin } }
      }
      case "jsonl":
      case "parquet": {
        const load = task.kind === "jsonl" ? Loaders.jsonl : Loaders.parquet
        const train = yield* loadedSplit(task, "train", task.train, yield* load(task.train, { mapping: task.mapping, onError: task.onError ?? "fail" }))
        const test = yield* loadedSplit(task, "test", task.test, yield* load(task.test, { mapping: task.mapping, onError: task.onError ?? "fail" }))
        return { train: train.rows, test: test.rows, corpus: [], origins: { train: train.origin, test: test.origin } }
      }
    }
  }).pipe(Effect.mapError((e) => (e instanceof DataError ? e : wrap(task.kind)(e as { message: string }))))

/** Where row `i` of a split is, for a message: `file:line: row "id"`, or the split and id of a generated row. */
const where = (data: Built, split: Split, i: number): string => {
  const origin = data.origins[split]
  const id = JSON.stringify(data[split][i].id)
  if (origin === undefined) return `${split} row ${id}`
  return `${origin.file}${origin.unit === "row" ? ` row ${origin.lines[i]}` : `:${origin.lines[i]}`}: row ${id}`
}

/** The longest token of `codec` in bytes (cl100k's is 128): a text of more than `maxSeqLen` times it cannot fit. */
const longestToken = (codec: Codec): number => {
  let max = 1
  for (let id = 0; id < codec.ordinary; id++) max = Math.max(max, codec.byteLength(id))
  return max
}

/**
 * Refuses the first train or held-out row whose prompt (its question under the recipe's template)
 * leaves no room to generate in the model's context of `maxSeqLen` tokens; the error names its
 * file, line and id. Checked once, before any stage, instead of a stage failing on "prompt 3" minutes in.
 * A question too large to fit at any tokenization is refused by its size, without tokenizing it.
 */
export const checkFits = (data: Built, ctx: Pick<RunContext, "recipe" | "tokenizer" | "promptIds" | "policy">) =>
  Effect.gen(function*() {
    const max = ctx.policy.config.maxSeqLen
    const task = ctx.recipe.task.kind
    let longest = 0
    for (const split of ["train", "test"] as const) {
      for (const [i, row] of data[split].entries()) {
        // A token is at least one byte, so only a question of more than `max` bytes can be too big to tokenize.
        const bytes = row.question.length > max ? Buffer.byteLength(row.question, "utf8") : 0
        if (bytes > max && longest === 0) longest = longestToken(ctx.tokenizer)
        if (bytes > max * longest && longest > 0) {
          const message = `${where(data, split, i)}: its question is ${bytes} bytes, more than the model's context of maxSeqLen ${max} tokens can hold (${longest} bytes a token at most)`
          return yield* new DataError({ task, message })
        }
        const n = ctx.promptIds(row.question).length
        if (n >= max) {
          const message = `${where(data, split, i)}: its prompt is ${n} tokens (the question in the template), and the model's context of maxSeqLen ${max} leaves no room to generate`
          return yield* new DataError({ task, message })
        }
      }
    }
  })
