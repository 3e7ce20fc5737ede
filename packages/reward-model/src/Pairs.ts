/**
 * Preference pairs: `(prompt, chosen, rejected)` rows from JSONL or Parquet, as Arrow batches, and
 * their tokenized form (`List<Int32>` id columns) that the trainer stage consumes.
 */
import * as fs from "node:fs/promises"
import { Field, RecordBatch, Schema as ArrowSchema, Table, tableFromIPC, Utf8, type Vector } from "apache-arrow"
import { Batch, Columns, Utf8 as StrictUtf8 } from "@r1flow/core"
import { Effect, Result, Schema } from "effect"
import { readParquet } from "parquet-wasm"

/** Text pairs. */
export const Text = new ArrowSchema(
  [new Field("prompt", new Utf8(), false), new Field("chosen", new Utf8(), false), new Field("rejected", new Utf8(), false)],
  new Map([["r1flow.schema", "preference_pairs"], ["r1flow.schema_version", "1"]])
)

/** Tokenized pairs: the text columns plus `prompt_ids`, `chosen_ids`, `rejected_ids`. */
export const Tokenized = new ArrowSchema(
  [
    ...Text.fields,
    new Field("prompt_ids", Batch.Int32List(), false),
    new Field("chosen_ids", Batch.Int32List(), false),
    new Field("rejected_ids", Batch.Int32List(), false)
  ],
  new Map([["r1flow.schema", "preference_pairs_tokenized"], ["r1flow.schema_version", "1"]])
)

/** A pairs file could not be read, or a row is malformed (the message names the file and line or row). */
export class PairsError extends Schema.TaggedError<PairsError>()("PairsError", {
  file: Schema.String,
  message: Schema.String
}) {}

const Row = Schema.Struct({ prompt: Schema.String, chosen: Schema.String, rejected: Schema.String })

const textBatch = (rows: ReadonlyArray<typeof Row.Type>): RecordBatch =>
  Batch.fromData(Text, {
    prompt: Columns.makeUtf8(rows.map((r) => r.prompt)),
    chosen: Columns.makeUtf8(rows.map((r) => r.chosen)),
    rejected: Columns.makeUtf8(rows.map((r) => r.rejected))
  })

const decodeRow = Schema.decodeUnknownResult(Row)

/** Reads pairs from a `.jsonl` (one `{prompt, chosen, rejected}` object a line) or `.parquet` file. */
export const read = (file: string): Effect.Effect<RecordBatch, PairsError> =>
  Effect.gen(function*() {
    const bytes = yield* Effect.tryPromise({
      try: () => fs.readFile(file),
      catch: (e) => new PairsError({ file, message: `cannot read: ${(e as Error).message}` })
    })
    const records: Array<{ where: string; value: unknown }> = []
    if (file.endsWith(".parquet")) {
      const table = yield* Effect.try({
        try: () => tableFromIPC(readParquet(new Uint8Array(bytes)).intoIPCStream()),
        catch: (e) => new PairsError({ file, message: `not a readable Parquet file: ${(e as Error).message}` })
      })
      for (let i = 0; i < table.numRows; i++) records.push({ where: `${file} row ${i + 1}`, value: table.get(i)?.toJSON() })
    } else if (file.endsWith(".jsonl")) {
      for (const [i, decoded] of StrictUtf8.lines(bytes).entries()) {
        if (Result.isFailure(decoded)) return yield* new PairsError({ file, message: `${file}:${i + 1}: ${decoded.failure}` })
        const line = decoded.success
        if (line.trim() === "") continue
        const value = yield* Effect.try({
          try: () => JSON.parse(line) as unknown,
          catch: (e) => new PairsError({ file, message: `${file}:${i + 1}: not JSON: ${(e as Error).message}` })
        })
        records.push({ where: `${file}:${i + 1}`, value })
      }
    } else {
      return yield* new PairsError({ file, message: "unknown format: expected a .jsonl or .parquet file" })
    }
    const rows: Array<typeof Row.Type> = []
    for (const r of records) {
      const d = decodeRow(r.value)
      if (d._tag === "Failure") return yield* new PairsError({ file, message: `${r.where}: needs string fields prompt, chosen, rejected (${d.failure.message})` })
      rows.push(d.success)
    }
    return textBatch(rows)
  })

/** Adds the id columns by encoding each text with `encode` (e.g. a tokenizer's `encode`). */
export const tokenize = (batch: RecordBatch, encode: (text: string) => ArrayLike<number>): RecordBatch => {
  const col = (name: string) => {
    const v = batch.getChild(name) as Vector<Utf8> | null
    if (v === null) throw new Error(`pairs batch has no "${name}" column`)
    return Array.from({ length: v.length }, (_, i) => encode(v.get(i) ?? ""))
  }
  const t = new Table(batch)
  return Batch.fromData(Tokenized, {
    prompt: t.getChild("prompt")!,
    chosen: t.getChild("chosen")!,
    rejected: t.getChild("rejected")!,
    prompt_ids: Columns.int32ListFromRows(col("prompt")),
    chosen_ids: Columns.int32ListFromRows(col("chosen")),
    rejected_ids: Columns.int32ListFromRows(col("rejected"))
  })
}

/** The tokenized pairs of a batch, as zero-copy rows of its id columns. */
export const pairsOf = (batch: RecordBatch): Array<{ prompt: Int32Array; chosen: Int32Array; rejected: Int32Array }> => {
  const view = (n: string) => Columns.int32List(batch.getChild(n) as any)
  const p = view("prompt_ids"), c = view("chosen_ids"), r = view("rejected_ids")
  return Array.from({ length: batch.numRows }, (_, i) => ({ prompt: Columns.row(p, i), chosen: Columns.row(c, i), rejected: Columns.row(r, i) }))
}
