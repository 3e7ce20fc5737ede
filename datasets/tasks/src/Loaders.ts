/**
 * Loaders for real data into task rows: GSM8K-style JSONL (`question`, and `answer` ending in
 * `#### final`), question/answer JSONL (GSM8K answers or plain ones, row by row), generic JSONL, and
 * Parquet, the last two through a column mapping.
 *
 * A malformed record (bytes that are not UTF-8, bad JSON, a missing or mistyped field, a GSM8K answer
 * without `#### `, a duplicate id) is reported with its file and 1-based line (Parquet: row) number. With
 * `onError: "fail"` (the default: data is never dropped silently) the first one fails the load;
 * with `"skip"` it is left out, counted and described in the result.
 */
import { Buffer } from "node:buffer"
import { readFile } from "node:fs/promises"
import * as path from "node:path"
import { tableFromIPC } from "apache-arrow"
import { Utf8 } from "@r1flow/core"
import { Effect, Result, Schema } from "effect"
import { readParquet } from "parquet-wasm"
import * as Task from "./Task.js"

/** Which source fields hold the question, the reference answer and (optionally) the id. */
export interface Mapping {
  readonly question: string
  readonly answer: string
  /** Default: `<file name>:<line>`. */
  readonly id?: string
}

/** What to do with a malformed record. */
export type OnError = "skip" | "fail"

/** A record left out under `onError: "skip"`. */
export interface Issue {
  readonly file: string
  /** 1-based line (JSONL) or row (Parquet). */
  readonly line: number
  readonly reason: string
}

/** Loaded rows, and what was skipped. */
export interface Loaded {
  readonly rows: Array<Task.Row>
  /** The 1-based line (JSONL) or row (Parquet) each row came from, for errors found later. */
  readonly lines: ReadonlyArray<number>
  readonly skipped: number
  readonly issues: ReadonlyArray<Issue>
}

/**
 * The most UTF-8 bytes a question or reference answer may hold (1 MiB). More is no task row but a
 * blob or a broken export, and would reach the tokenizer and every rollout batch; it is a malformed
 * record, reported with its line.
 */
export const MAX_TEXT_BYTES = 1 << 20

/** Options of the mapped loaders. */
export interface Options {
  readonly mapping: Mapping
  /** Default `"fail"`. */
  readonly onError?: OnError
}

/** A record that cannot become a task row. */
export class MalformedRecord extends Schema.TaggedError<MalformedRecord>()("MalformedRecord", {
  file: Schema.String,
  line: Schema.Number,
  reason: Schema.String,
  message: Schema.String
}) {}

/** A data file that cannot be read at all (missing, unreadable, not Parquet, lacking a mapped column). */
export class DataFileError extends Schema.TaggedError<DataFileError>()("DataFileError", {
  file: Schema.String,
  message: Schema.String
}) {}

// ---------------------------------------------------------------------------------------------
// Field decoding

const decodeJson = Schema.decodeUnknownResult(Schema.fromJsonString(Schema.Unknown))
const decodeObject = Schema.decodeUnknownResult(Schema.Record(Schema.String, Schema.Unknown))
const decodeText = Schema.decodeUnknownResult(Schema.NonEmptyString)
const decodeScalar = Schema.decodeUnknownResult(Schema.Union([Schema.NonEmptyString, Schema.Finite]))

const oneLine = (message: string) => message.replace(/\s*\n\s*/g, " ")

/** JSON-safe metadata values: Arrow gives bigints for Int64 and vectors for lists. */
const jsonable = (v: unknown): unknown => {
  if (typeof v === "bigint") return Number.isSafeInteger(Number(v)) ? Number(v) : String(v)
  if (v === null || typeof v !== "object") return v
  if (ArrayBuffer.isView(v) && !(v instanceof DataView)) return Array.from(v as unknown as ArrayLike<unknown>, jsonable)
  if (Array.isArray(v)) return v.map(jsonable)
  if (Symbol.iterator in v && "toArray" in v) return Array.from(v as Iterable<unknown>, jsonable)
  if ("toJSON" in v && typeof v.toJSON === "function") return jsonable(v.toJSON())
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, jsonable(x)]))
}

/** A field's value as text, or why not. Numbers (and Arrow bigints) are accepted where text is expected. */
const field = (record: Record<string, unknown>, name: string, text: boolean): Result.Result<string, string> => {
  if (!(name in record)) return Result.fail(`missing field "${name}"`)
  const raw = record[name]
  const value = typeof raw === "bigint" ? String(raw) : raw
  const decoded = text ? decodeText(value) : decodeScalar(value)
  if (Result.isFailure(decoded)) return Result.fail(`field "${name}": ${oneLine(decoded.failure.message)}, got ${JSON.stringify(jsonable(value)) ?? String(value)}`)
  const out = String(decoded.success)
  // A UTF-16 code unit is at most 3 UTF-8 bytes: only long strings are measured.
  const bytes = out.length * 3 > MAX_TEXT_BYTES ? Buffer.byteLength(out, "utf8") : 0
  return bytes > MAX_TEXT_BYTES ? Result.fail(`field "${name}" is ${bytes} bytes, over the ${MAX_TEXT_BYTES} a task row's text may hold`) : Result.succeed(out)
}

/** A record as a task row through `mapping`; unmapped fields become the metadata. */
const mapped = (record: Record<string, unknown>, mapping: Mapping, defaultId: string): Result.Result<Task.Row, string> => {
  const question = field(record, mapping.question, true)
  if (Result.isFailure(question)) return Result.fail(question.failure)
  const answer = field(record, mapping.answer, false)
  if (Result.isFailure(answer)) return Result.fail(answer.failure)
  let id = defaultId
  if (mapping.id !== undefined) {
    const r = field(record, mapping.id, false)
    if (Result.isFailure(r)) return Result.fail(r.failure)
    id = r.success
  }
  const used = new Set([mapping.question, mapping.answer, mapping.id])
  const metadata = Object.fromEntries(Object.entries(record).filter(([k]) => !used.has(k)).map(([k, v]) => [k, jsonable(v)]))
  return Result.succeed({ id, question: question.success, answer: answer.success, metadata })
}

/** A GSM8K record: the reference answer is the text after the last `#### `, verbatim; the working goes to metadata. */
const gsm8kRow = (record: Record<string, unknown>, id: string): Result.Result<Task.Row, string> => {
  const question = field(record, "question", true)
  if (Result.isFailure(question)) return Result.fail(question.failure)
  const answer = field(record, "answer", true)
  if (Result.isFailure(answer)) return Result.fail(answer.failure)
  const at = answer.success.lastIndexOf("#### ")
  if (at < 0) return Result.fail(`field "answer" has no "#### " final answer`)
  const final = answer.success.slice(at + 5).trim()
  if (final.length === 0) return Result.fail(`field "answer" has an empty final answer after "#### "`)
  return Result.succeed({ id, question: question.success, answer: final, metadata: { solution: answer.success.slice(0, at).trim() } })
}

/** A `{ question, answer }` record: a GSM8K answer (working, then `#### final`) as `gsm8kRow` reads it, any other answer verbatim. */
const questionAnswerRow = (record: Record<string, unknown>, id: string): Result.Result<Task.Row, string> =>
  typeof record.answer === "string" && record.answer.includes("#### ")
    ? gsm8kRow(record, id)
    : mapped(record, { question: "question", answer: "answer" }, id)

// ---------------------------------------------------------------------------------------------
// Collecting rows

/**
 * Runs `toRow` over numbered records, failing on the first problem or skipping it per `onError`.
 * Duplicate ids are a problem too: downstream stages key groups and metrics by id.
 */
const collect = Effect.fnUntraced(function*(
  file: string,
  unit: "line" | "row",
  records: Iterable<{ readonly line: number; readonly row: Result.Result<Task.Row, string> }>,
  onError: OnError
): Effect.fn.Return<Loaded, MalformedRecord> {
  const rows: Array<Task.Row> = []
  const lines: Array<number> = []
  const issues: Array<Issue> = []
  const firstLine = new Map<string, number>()
  for (const { line, row } of records) {
    if (Result.isSuccess(row) && !firstLine.has(row.success.id)) {
      firstLine.set(row.success.id, line)
      rows.push(row.success)
      lines.push(line)
      continue
    }
    const reason = Result.isFailure(row)
      ? row.failure
      : `duplicate id "${row.success.id}" (first at ${unit} ${firstLine.get(row.success.id)})`
    if (onError === "fail") return yield* new MalformedRecord({ file, line, reason, message: `${file}: ${unit} ${line}: ${reason}` })
    issues.push({ file, line, reason })
  }
  return { rows, lines, skipped: issues.length, issues }
})

const read = (file: string) =>
  Effect.tryPromise({
    try: () => readFile(file),
    catch: (e) => new DataFileError({ file, message: `${file}: cannot read: ${e instanceof Error ? e.message : String(e)}` })
  })

/**
 * Each non-blank line of a JSONL file's bytes as a row (or why not). Lines are decoded strictly:
 * a line that is not UTF-8 is a malformed record, never text with U+FFFD in it.
 */
function* jsonlRecords(bytes: Uint8Array, toRow: (record: Record<string, unknown>, line: number) => Result.Result<Task.Row, string>) {
  const lines = Utf8.lines(bytes)
  for (let i = 0; i < lines.length; i++) {
    const line = i + 1
    const decoded = lines[i]
    if (Result.isFailure(decoded)) {
      yield { line, row: Result.fail(decoded.failure) }
      continue
    }
    const text = decoded.success
    if (text.trim().length === 0) continue
    const json = decodeJson(text)
    if (Result.isFailure(json)) {
      yield { line, row: Result.fail(`bad JSON: ${oneLine(json.failure.message)}`) }
      continue
    }
    const record = decodeObject(json.success)
    yield {
      line,
      row: Result.isFailure(record) ? Result.fail(`not a JSON object: ${text.slice(0, 40)}`) : toRow(record.success, line)
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Loaders

/** GSM8K JSONL: `{ question, answer }`, the answer's last `#### ` line holding the final answer. Ids are `gsm8k/<file>:<line>`. */
export const gsm8k = Effect.fnUntraced(function*(
  file: string,
  options?: { readonly onError?: OnError }
): Effect.fn.Return<Loaded, MalformedRecord | DataFileError> {
  const bytes = yield* read(file)
  const name = path.basename(file)
  return yield* collect(file, "line", jsonlRecords(bytes, (r, line) => gsm8kRow(r, `gsm8k/${name}:${line}`)), options?.onError ?? "fail")
})

/**
 * JSONL of `{ question, answer }` objects, such as a GSM8K split or a hand-written test set: an answer with a
 * `#### ` line is a GSM8K solution (its final answer is the reference, the working goes to metadata), any
 * other answer (text or number) is the reference as it is. Other fields become metadata. Ids are `<file>:<line>`.
 */
export const questionAnswer = Effect.fnUntraced(function*(
  file: string,
  options?: { readonly onError?: OnError }
): Effect.fn.Return<Loaded, MalformedRecord | DataFileError> {
  const bytes = yield* read(file)
  const name = path.basename(file)
  return yield* collect(file, "line", jsonlRecords(bytes, (r, line) => questionAnswerRow(r, `${name}:${line}`)), options?.onError ?? "fail")
})

/** Any JSONL of objects, through `mapping`. Unmapped fields become the row's metadata. */
export const jsonl = Effect.fnUntraced(function*(file: string, options: Options): Effect.fn.Return<Loaded, MalformedRecord | DataFileError> {
  const bytes = yield* read(file)
  const name = path.basename(file)
  return yield* collect(file, "line", jsonlRecords(bytes, (r, line) => mapped(r, options.mapping, `${name}:${line}`)), options.onError ?? "fail")
})

/**
 * A Parquet file, through `mapping` (parquet-wasm reads it to Arrow IPC, apache-arrow decodes that).
 * Unmapped columns become the row's metadata; a mapped column the file lacks fails the load.
 */
export const parquet = Effect.fnUntraced(function*(file: string, options: Options): Effect.fn.Return<Loaded, MalformedRecord | DataFileError> {
  const bytes = yield* read(file)
  const table = yield* Effect.try({
    try: () => tableFromIPC(readParquet(bytes).intoIPCStream()),
    catch: (e) => new DataFileError({ file, message: `${file}: not a readable Parquet file: ${e instanceof Error ? e.message : String(e)}` })
  })
  const names = table.schema.fields.map((f) => f.name)
  const mappedNames = [options.mapping.question, options.mapping.answer, ...(options.mapping.id === undefined ? [] : [options.mapping.id])]
  const missing = mappedNames.filter((n) => !names.includes(n))
  if (missing.length > 0) {
    return yield* new DataFileError({ file, message: `${file}: no column ${missing.map((n) => `"${n}"`).join(", ")} (columns: ${names.join(", ")})` })
  }
  const columns = names.map((n) => [n, table.getChild(n)!] as const)
  const name = path.basename(file)
  function* records() {
    for (let i = 0; i < table.numRows; i++) {
      const record = Object.fromEntries(columns.map(([n, c]) => [n, c.get(i)]))
      yield { line: i + 1, row: mapped(record, options.mapping, `${name}:${i + 1}`) }
    }
  }
  return yield* collect(file, "row", records(), options.onError ?? "fail")
})
