/**
 * Arrow stages that tokenize text columns and detokenize id columns, batch-wise.
 *
 * Tokenizing writes every row's ids straight into one growing `Int32Array` plus offsets, which
 * become the `List<Int32>` column without another copy. tiktoken hands back a fresh `Uint32Array`
 * per row; copying it into the flat buffer is the one copy we cannot avoid. Text is read from the
 * Arrow `Utf8` buffer one row at a time through a `Buffer` view (no per-row array allocations).
 */
import { Batch, Columns, Stage } from "@r1flow/core"
import {
  Bool,
  Field,
  Int32,
  makeData,
  makeVector,
  Schema as ArrowSchema,
  Utf8,
  type List,
  type RecordBatch,
  type Vector
} from "apache-arrow"
import { Effect } from "effect"
import { Buffer, isUtf8 } from "node:buffer"
import * as Template from "./Template.js"
import { type Codec, Tokenizer } from "./Tokenizer.js"

/** Token ids of a batch of rows: flat values, `rows + 1` offsets, and which rows were cut. */
export interface Encoded {
  readonly values: Int32Array
  readonly offsets: Int32Array
  /** One byte per row: 1 where the row had more than `maxLength` ids and was cut. */
  readonly truncated: Uint8Array
}

/** Calls `f(text, row)` for each row of a `Utf8` column (a null row is the empty string). */
export const forEachText = (column: Vector<Utf8>, f: (text: string, row: number) => void): void => {
  let row = 0
  for (const d of column.data) {
    const buf = Buffer.from(d.values.buffer, d.values.byteOffset, d.values.byteLength)
    const vo = d.valueOffsets
    for (let i = 0; i < d.length; i++, row++) f(d.getValid(i) ? buf.toString("utf8", vo[i], vo[i + 1]) : "", row)
  }
}

/** Total UTF-8 bytes of a `Utf8` column (to size the first id buffer). */
const byteLength = (column: Vector<Utf8>): number => column.data.reduce((n, d) => n + d.valueOffsets[d.length] - d.valueOffsets[0], 0)

/**
 * Encodes each row of `column` with `encode` into one flat buffer; rows longer than `maxLength`
 * keep their first `maxLength` ids and are flagged.
 */
export const encodeColumn = (
  column: Vector<Utf8>,
  encode: (text: string) => Int32Array,
  maxLength = Infinity
): Encoded => {
  const rows = column.length
  const offsets = new Int32Array(rows + 1)
  const truncated = new Uint8Array(rows)
  // Most text runs 3–4 bytes a token; start at one id per 2 bytes and double when short.
  let values = new Int32Array(Math.max(1024, byteLength(column) >> 1))
  let at = 0
  forEachText(column, (text, row) => {
    let ids = encode(text)
    if (ids.length > maxLength) {
      ids = ids.subarray(0, maxLength)
      truncated[row] = 1
    }
    if (at + ids.length > values.length) {
      const grown = new Int32Array(Math.max(values.length * 2, at + ids.length))
      grown.set(values.subarray(0, at))
      values = grown
    }
    values.set(ids, at)
    at += ids.length
    offsets[row + 1] = at
  })
  return { values: values.subarray(0, at), offsets, truncated }
}

/** A `Bool` column from one byte per row (nonzero is true). */
export const makeBool = (flags: Uint8Array): Vector<Bool> => {
  const bitmap = new Uint8Array((flags.length + 7) >> 3)
  for (let i = 0; i < flags.length; i++) if (flags[i] !== 0) bitmap[i >> 3] |= 1 << (i & 7)
  return makeVector(makeData({ type: new Bool(), length: flags.length, nullCount: 0, data: bitmap }))
}

/** Per-row lengths from offsets. */
const lengths = (offsets: Int32Array): Int32Array => {
  const out = new Int32Array(offsets.length - 1)
  for (let i = 0; i < out.length; i++) out[i] = offsets[i + 1] - offsets[i]
  return out
}

const textField = (name: string) => new ArrowSchema([new Field(name, new Utf8(), true)])

/**
 * `tokenizeColumn(name)`: the `Utf8` column `name` to `<name>_ids` (`List<Int32>`, data text: no
 * special tokens), `<name>_length` (`Int32`, ids kept) and `<name>_truncated` (`Bool`, the row had
 * more than `maxLength` ids and keeps the first `maxLength`).
 */
export const tokenizeColumn = (name: string, options: { readonly maxLength?: number } = {}): Stage.Stage<any, any, Tokenizer> => {
  const stage = `tokenize(${name})`
  const maxLength = options.maxLength ?? Infinity
  const output = new ArrowSchema([
    new Field(`${name}_ids`, Batch.Int32List(), false),
    new Field(`${name}_length`, new Int32(), false),
    new Field(`${name}_truncated`, new Bool(), false)
  ])
  return Stage.make({
    name: stage,
    input: textField(name),
    output,
    transform: Effect.fnUntraced(function*(batch) {
      const codec = yield* Tokenizer
      const enc = encodeColumn(batch.getChild(name) as Vector<Utf8>, codec.encode, maxLength)
      return yield* Stage.addColumns(stage, batch, output, {
        [`${name}_ids`]: Columns.makeInt32List(enc.values, enc.offsets),
        [`${name}_length`]: Columns.makeInt32(lengths(enc.offsets)),
        [`${name}_truncated`]: makeBool(enc.truncated)
      })
    })
  })
}

/**
 * Decoded rows of a `List<Int32>` column as a `Utf8` column, and which rows were incomplete.
 *
 * The whole batch is decoded in one tiktoken call straight into the column's bytes; row offsets
 * come from each id's byte length. Only when a batch holds unknown ids or invalid UTF-8 (rare:
 * cut completions) are those rows rebuilt one by one, with the WHATWG repair (U+FFFD), because a
 * `Utf8` column must hold valid UTF-8.
 */
export const decodeColumn = (codec: Codec, column: Vector<List<Int32>>): { readonly text: Vector<Utf8>; readonly incomplete: Uint8Array } => {
  const view = Columns.int32List(column)
  const incomplete = new Uint8Array(view.rows)
  let offsets = new Int32Array(view.rows + 1)
  let bytes: Uint8Array = new Uint8Array(0)
  let allKnown = true
  for (let i = 0; i < view.values.length; i++) {
    if (!codec.isKnown(view.values[i])) {
      allKnown = false
      break
    }
  }
  if (allKnown) {
    bytes = codec.decodeBytes(view.values).bytes
    let at = 0
    for (let r = 0; r < view.rows; r++) {
      for (let k = view.offsets[r]; k < view.offsets[r + 1]; k++) at += codec.byteLength(view.values[k])
      offsets[r + 1] = at
      if (!isUtf8(bytes.subarray(offsets[r], at))) incomplete[r] = 1
    }
  }
  if (!allKnown || incomplete.includes(1)) {
    const parts: Array<Uint8Array> = []
    offsets = new Int32Array(view.rows + 1)
    for (let r = 0; r < view.rows; r++) {
      const decoded = codec.decodeBytes(Columns.row(view, r))
      let b = decoded.bytes
      if (decoded.unknown > 0 || !isUtf8(b)) {
        b = Buffer.from(Buffer.from(b.buffer, b.byteOffset, b.length).toString("utf8"), "utf8")
        incomplete[r] = 1
      }
      parts.push(b)
      offsets[r + 1] = offsets[r] + b.length
    }
    bytes = Buffer.concat(parts)
  }
  const text = makeVector(makeData({ type: new Utf8(), length: view.rows, nullCount: 0, valueOffsets: offsets, data: bytes }))
  return { text, incomplete }
}

/**
 * `detokenizeColumn({ ids, text })`: the `List<Int32>` column `ids` to the `Utf8` column `text`
 * (control ids decode to their tag text) and `<text>_incomplete` (`Bool`: the ids were not valid
 * UTF-8, e.g. a completion cut inside a multi-byte character; the text holds U+FFFD there).
 */
export const detokenizeColumn = (columns: { readonly ids: string; readonly text: string }): Stage.Stage<any, any, Tokenizer> => {
  const stage = `detokenize(${columns.ids})`
  const output = new ArrowSchema([new Field(columns.text, new Utf8(), false), new Field(`${columns.text}_incomplete`, new Bool(), false)])
  return Stage.make({
    name: stage,
    input: new ArrowSchema([new Field(columns.ids, Batch.Int32List(), false)]),
    output,
    transform: Effect.fnUntraced(function*(batch) {
      const codec = yield* Tokenizer
      const dec = decodeColumn(codec, batch.getChild(columns.ids) as Vector<List<Int32>>)
      return yield* Stage.addColumns(stage, batch, output, { [columns.text]: dec.text, [`${columns.text}_incomplete`]: makeBool(dec.incomplete) })
    })
  })
}

/** Column types of the task rows the prompts stage reads (the datasets package's task schema may carry more). */
export type TaskRowsType = { id: Utf8; prompt: Utf8; answer: Utf8; metadata: Utf8 }

/** The columns `toPrompts` reads. */
export const TaskRows: ArrowSchema<TaskRowsType> = new ArrowSchema([
  new Field("id", new Utf8(), false),
  new Field("prompt", new Utf8(), false),
  new Field("answer", new Utf8(), true),
  new Field("metadata", new Utf8(), true)
])

/**
 * Task rows to core's `Batch.Prompts`: `prompt_ids` is the question in the chosen template (the
 * question is data: no control id can come from it), `group_id` the row's index in its batch
 * (each prompt is one GRPO group; its G completions share it). The template's completion prefix
 * (`<think>` under `startThink`) is recorded in the batch's schema metadata for the rewards.
 */
export const toPrompts = (options: { readonly template: Template.Name } & Template.PromptOptions): Stage.Stage<TaskRowsType, Batch.PromptsType, Tokenizer> => {
  const stage = `prompts(${options.template})`
  return Stage.make({
    name: stage,
    input: TaskRows,
    output: Batch.Prompts,
    transform: Effect.fnUntraced(function*(batch: RecordBatch<TaskRowsType>) {
      const codec = yield* Tokenizer
      const enc = encodeColumn(batch.getChild("prompt")!, (q) => Template.prompt(codec, options.template, q, options))
      const groups = new Int32Array(batch.numRows)
      for (let i = 0; i < groups.length; i++) groups[i] = i
      return yield* Stage.addColumns(stage, batch, Batch.withCompletionPrefix(Batch.Prompts, Template.promptPrefix(codec, options.template, options)), {
        group_id: Columns.makeInt32(groups),
        prompt_ids: Columns.makeInt32List(enc.values, enc.offsets)
      })
    })
  })
}
