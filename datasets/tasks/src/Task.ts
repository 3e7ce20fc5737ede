/**
 * The rows every generator and loader produces, their Arrow schema ("task rows"), and the hash
 * split that keeps train and held-out problems apart.
 *
 * A task row carries the raw question (no chat template: the engine applies the R1 template and
 * tokenizes into core's `Batch.Prompts`), the reference answer the reward compares against, and
 * task-specific metadata (e.g. countdown's `{ numbers, target }`) as JSON.
 */
import { Batch, Columns, Rng } from "@r1flow/core"
import { Field, RecordBatch, Schema as ArrowSchema, Utf8 } from "apache-arrow"
import { Effect, Schema } from "effect"

/** One task instance. `metadata` must be JSON-serialisable. */
export interface Row {
  readonly id: string
  readonly question: string
  readonly answer: string
  readonly metadata: Record<string, unknown>
}

/** Which side of the train / held-out split a problem belongs to. */
export type Split = "train" | "test"

/** Column types of a task-rows batch. `metadata` is a JSON object string. */
export type RowsType = {
  id: Utf8
  prompt: Utf8
  answer: Utf8
  metadata: Utf8
}

/** Arrow schema of task rows: id, prompt (the raw question), answer, metadata JSON. */
export const Rows: ArrowSchema<RowsType> = new ArrowSchema(
  [
    new Field("id", new Utf8(), false),
    new Field("prompt", new Utf8(), false),
    new Field("answer", new Utf8(), false),
    new Field("metadata", new Utf8(), false)
  ],
  new Map([
    ["r1flow.schema", "task-rows"],
    ["r1flow.schema_version", Batch.SCHEMA_VERSION]
  ])
)

/** A task-rows record batch (one chunk per column). */
export const toBatch = (rows: ReadonlyArray<Row>): RecordBatch<RowsType> =>
  Batch.fromData(Rows, {
    id: Columns.makeUtf8(rows.map((r) => r.id)),
    prompt: Columns.makeUtf8(rows.map((r) => r.question)),
    answer: Columns.makeUtf8(rows.map((r) => r.answer)),
    metadata: Columns.makeUtf8(rows.map((r) => JSON.stringify(r.metadata)))
  })

/** Share of the problem space held out for evaluation. */
export const HELD_OUT_FRACTION = 0.1


/** murmur3's finaliser: FNV-1a alone leaves the low bits of similar strings correlated. */
const mix = (h: number): number => {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b) >>> 0
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35) >>> 0
  return (h ^ (h >>> 16)) >>> 0
}

/**
 * The split a problem belongs to, from a hash of its canonical text (e.g. `"12+345"`) alone:
 * independent of seed and draw order, so one problem can never land on both sides.
 */
export const splitOf = (canonical: string): Split =>
  mix(Rng.hash(canonical)) / 2 ** 32 < HELD_OUT_FRACTION ? "test" : "train"

/** Generator options that cannot produce what was asked. */
export class InvalidOptions extends Schema.TaggedError<InvalidOptions>()("InvalidOptions", {
  task: Schema.String,
  message: Schema.String
}) {}

/** The problem space ran out before `count` distinct problems of the split were found. */
export class Exhausted extends Schema.TaggedError<Exhausted>()("Exhausted", {
  task: Schema.String,
  split: Schema.String,
  found: Schema.Number,
  requested: Schema.Number,
  message: Schema.String
}) {}

/**
 * Draws distinct problems of one split until `count` are found. `draw` must be a pure function
 * of its stream; `canonical` names the problem for the split hash and for de-duplication.
 */
export const sample = Effect.fnUntraced(function*<P>(options: {
  readonly task: string
  readonly split: Split
  readonly count: number
  /** A fresh problem, or `undefined` for a draw to discard (it still counts against the budget). */
  readonly draw: () => P | undefined
  readonly canonical: (p: P) => string
}): Effect.fn.Return<Array<P>, Exhausted> {
  const seen = new Set<string>()
  const out: Array<P> = []
  // Generous budget: at a 10 % held-out share a test draw succeeds ~1 in 10; duplicates only bite
  // when the space is nearly used up, which is the case this bound exists to report.
  const budget = 1000 + 200 * options.count
  for (let tries = 0; out.length < options.count && tries < budget; tries++) {
    const p = options.draw()
    if (p === undefined) continue
    const key = options.canonical(p)
    if (seen.has(key) || splitOf(key) !== options.split) continue
    seen.add(key)
    out.push(p)
  }
  if (out.length < options.count) {
    return yield* new Exhausted({
      task: options.task,
      split: options.split,
      found: out.length,
      requested: options.count,
      message: `${options.task}: found only ${out.length} distinct ${options.split} problems of ${options.count} requested; widen the options`
    })
  }
  return out
})
