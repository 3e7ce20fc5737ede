/**
 * The run's data, from the recipe's `task`: generated (arithmetic, countdown: train and held-out
 * splits plus a base corpus of worked solutions) or loaded (GSM8K, JSONL, Parquet files).
 *
 * Every row carries its task's name in `metadata.task` (a single task's is its kind), which routes
 * rewards (`RewardStage.Entry.tasks`) and splits metrics and evals by task. A mixture builds each of its
 * tasks from the run's seed and concatenates them in order: train (drawn by weight, `Prompts.taskSampler`),
 * held-out (every task's test rows) and corpus, whose `count` is shared among the generated tasks by weight:
 *
 *   corpus_k = ⌊count · w_k / Σ_j w_j⌋ (+1 for the first count − Σ_k ⌊…⌋ of them)   over generated tasks j, k
 *
 * A mixture's ids are `<name>/<id>`, unique across its tasks; a single task's stay as they are.
 */
import { Arithmetic, Countdown, Loaders, type Task } from "@r1flow/datasets"
import type { Codec } from "@r1flow/tokenizer"
import { Effect, Schema } from "effect"
import { Buffer } from "node:buffer"
import type { Data, RunContext } from "./Context.js"
import * as Recipe from "./Recipe.js"

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

/** Rows `start…` of a split (to the next segment) came from `origin`; generated rows have none. */
export interface Segment {
  readonly start: number
  readonly origin?: Origin
}

/** The run's data, with where each split's rows came from (one segment per task, in row order). */
export interface Built extends Data {
  readonly origins: { readonly train: ReadonlyArray<Segment>; readonly test: ReadonlyArray<Segment> }
}

type Split = "train" | "test"

/**
 * A loaded split, refused when it holds no problem: a run over an empty train set trains on nothing
 * and an empty test set gives accuracies over 0 problems, both reported as success.
 */
const loadedSplit = (task: Recipe.SingleTask, split: Split, file: string, loaded: Loaders.Loaded) =>
  Effect.gen(function*() {
    const unit = task.kind === "parquet" ? "row" : "line"
    if (loaded.rows.length > 0) return { rows: loaded.rows as ReadonlyArray<Task.Row>, origin: { file, unit, lines: loaded.lines } satisfies Origin }
    const first = loaded.issues[0]
    const why = first === undefined ? "" : ` (all ${loaded.skipped} records were skipped under onError "skip"; the first, ${unit} ${first.line}: ${first.reason})`
    return yield* new DataError({ task: task.kind, message: `${file}: the ${split} set has no problems${why}` })
  })

const generatedSplit = <A>(task: Recipe.SingleTask, split: Split, rows: ReadonlyArray<A>) =>
  rows.length > 0 ? Effect.succeed(rows) : Effect.fail(new DataError({ task: task.kind, message: `the generated ${task.kind} ${split} set has no problems` }))

/** How much of a base corpus to build. */
export interface CorpusOptions {
  readonly corpusSize: number
  readonly wrongFraction?: number
}

/** One task's splits, untagged, with the origin of each loaded split. */
interface Single extends Data {
  readonly origins: { readonly train?: Origin; readonly test?: Origin }
}

/** Builds (or loads) one task's rows; `corpusSize` 0 skips the corpus. */
const buildSingle = (task: Recipe.SingleTask, seed: number, options: CorpusOptions): Effect.Effect<Single, DataError> =>
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

/**
 * `rows` with `metadata.task` set to `name`, ids prefixed `<name>/` when `prefix` and not already so (countdown's
 * own ids are `countdown/…`: a task named countdown keeps them, rather than `countdown/countdown/…`). Names are
 * unique, so ids stay unique across the tasks either way.
 */
const tagged = (rows: ReadonlyArray<Task.Row>, name: string, prefix: boolean): Array<Task.Row> =>
  rows.map((r) => ({ ...r, id: prefix && !r.id.startsWith(`${name}/`) ? `${name}/${r.id}` : r.id, metadata: { ...r.metadata, task: name } }))

/** Each task's share of a corpus of `count` (see the module doc); loaded tasks, which have no corpus, get 0. */
export const corpusShares = (tasks: ReadonlyArray<Recipe.NamedTask>, count: number): Array<number> => {
  const generated = tasks.map((t) => t.task.kind === "arithmetic" || t.task.kind === "countdown")
  const total = tasks.reduce((a, t, k) => a + (generated[k] ? t.weight : 0), 0)
  const shares = tasks.map((t, k) => (generated[k] ? Math.floor((count * t.weight) / total) : 0))
  let left = count - shares.reduce((a, b) => a + b, 0)
  for (let k = 0; k < tasks.length && left > 0; k++) {
    if (generated[k]) {
      shares[k]++
      left--
    }
  }
  return shares
}

/** Segments of a split from each task's part, in order. */
const segments = (parts: ReadonlyArray<{ readonly rows: number; readonly origin?: Origin }>): Array<Segment> => {
  let start = 0
  return parts.map((p) => {
    const s: Segment = p.origin === undefined ? { start } : { start, origin: p.origin }
    start += p.rows
    return s
  })
}

/**
 * Builds (or loads) train, held-out and corpus rows for `task` (one, or each of a mixture's in order), every
 * row tagged with its task in `metadata.task`; `corpusSize` 0 skips the corpus. An empty train or held-out
 * set is a `DataError` naming its task and file.
 */
export const build = (task: Recipe.Task, seed: number, options: CorpusOptions): Effect.Effect<Built, DataError> =>
  Effect.gen(function*() {
    const tasks = Recipe.tasksOf(task)
    const mixture = task.kind === "mixture"
    const shares = mixture ? corpusShares(tasks, options.corpusSize) : [options.corpusSize]
    const built: Array<Single> = []
    for (const [k, t] of tasks.entries()) {
      const one = yield* buildSingle(t.task, seed, { ...options, corpusSize: shares[k] }).pipe(
        Effect.mapError((e) => (mixture ? new DataError({ task: t.name, message: `task.tasks[${k}] (${t.name}): ${e.message}` }) : e))
      )
      built.push(one)
    }
    const rows = (split: "train" | "test") => built.flatMap((b, k) => tagged(b[split], tasks[k].name, mixture))
    const parts = (split: "train" | "test") => segments(built.map((b) => ({ rows: b[split].length, ...(b.origins[split] !== undefined ? { origin: b.origins[split] } : {}) })))
    return { train: rows("train"), test: rows("test"), corpus: built.flatMap((b) => b.corpus), origins: { train: parts("train"), test: parts("test") } }
  })

/** Where row `i` of a split is, for a message: `file:line: row "id"`, or the split and id of a generated row. */
const where = (data: Built, split: Split, i: number): string => {
  const segment = data.origins[split].findLast((s) => s.start <= i)
  const id = JSON.stringify(data[split][i].id)
  const origin = segment?.origin
  if (segment === undefined || origin === undefined) return `${split} row ${id}`
  const line = origin.lines[i - segment.start]
  return `${origin.file}${origin.unit === "row" ? ` row ${line}` : `:${line}`}: row ${id}`
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
    let longest = 0
    for (const split of ["train", "test"] as const) {
      for (const [i, row] of data[split].entries()) {
        // The row's own task names the error in a mixture (its kind for a single task).
        const task = typeof row.metadata.task === "string" ? row.metadata.task : ctx.recipe.task.kind
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
