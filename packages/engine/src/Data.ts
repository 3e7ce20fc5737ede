/**
 * The run's data, from the recipe's `task`: generated (arithmetic, countdown: train and held-out
 * splits plus a base corpus of worked solutions) or loaded (GSM8K, JSONL, Parquet files).
 */
import { Arithmetic, Countdown, Loaders, type Task } from "@r1flow/datasets"
import { Effect, Schema } from "effect"
import type { Data } from "./Context.js"
import type * as Recipe from "./Recipe.js"

/** The task's data could not be made or read. */
export class DataError extends Schema.TaggedError<DataError>()("DataError", {
  task: Schema.String,
  message: Schema.String
}) {}

const wrap = (task: string) => (e: { readonly message: string }) => new DataError({ task, message: e.message })

/** Builds (or loads) train, held-out and corpus rows for `task`; `corpusSize` 0 skips the corpus. */
export const build = (task: Recipe.Task, seed: number, options: { readonly corpusSize: number; readonly wrongFraction?: number }): Effect.Effect<Data, DataError> =>
  Effect.gen(function*() {
    switch (task.kind) {
      case "arithmetic": {
        const base = { seed, digits: task.digits, ops: task.ops }
        const train = yield* Arithmetic.generate({ ...base, count: task.train, split: "train" })
        const test = yield* Arithmetic.generate({ ...base, count: task.test, split: "test" })
        const corpus = options.corpusSize > 0 ? yield* Arithmetic.corpus({ ...base, seed: seed + 1, count: options.corpusSize, wrongFraction: options.wrongFraction }) : []
        return { train, test, corpus }
      }
      case "countdown": {
        const base = { seed, numbers: task.numbers, maxTarget: task.maxTarget }
        const train = yield* Countdown.generate({ ...base, count: task.train, split: "train" })
        const test = yield* Countdown.generate({ ...base, count: task.test, split: "test" })
        const corpus = options.corpusSize > 0 ? yield* Countdown.corpus({ ...base, seed: seed + 1, count: options.corpusSize, wrongFraction: options.wrongFraction }) : []
        return { train, test, corpus }
      }
      case "gsm8k": {
        const train: ReadonlyArray<Task.Row> = (yield* Loaders.gsm8k(task.train, { onError: task.onError ?? "fail" })).rows
        const test: ReadonlyArray<Task.Row> = (yield* Loaders.gsm8k(task.test, { onError: task.onError ?? "fail" })).rows
        return { train, test, corpus: [] }
      }
      case "jsonl":
      case "parquet": {
        const load = task.kind === "jsonl" ? Loaders.jsonl : Loaders.parquet
        const train: ReadonlyArray<Task.Row> = (yield* load(task.train, { mapping: task.mapping, onError: task.onError ?? "fail" })).rows
        const test: ReadonlyArray<Task.Row> = (yield* load(task.test, { mapping: task.mapping, onError: task.onError ?? "fail" })).rows
        return { train, test, corpus: [] }
      }
    }
  }).pipe(Effect.mapError((e) => (e instanceof DataError ? e : wrap(task.kind)(e as { message: string }))))
