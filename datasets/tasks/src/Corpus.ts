/**
 * Base corpora: worked solutions in R1's `<think>…</think><answer>…</answer>` form for pretraining
 * the base model before RL.
 *
 * A configurable share of the solutions is deliberately flawed: wrong (a dropped carry, an
 * off-by-one digit, a near miss, a false step) or unfinished (cut before `</answer>`, or written without tags).
 * A base model trained on it is then imperfect in the ways rule rewards detect, which leaves GRPO
 * something to improve. Every row records whether it is correct and which flaw it carries.
 */
import { Batch, Columns, type Rng } from "@r1flow/core"
import { Bool, Field, makeData, makeVector, RecordBatch, Schema as ArrowSchema, Utf8 } from "apache-arrow"

/** How a solution was spoiled. `none` is the only flaw of a correct row. */
export type Flaw =
  | "none"
  | "dropped_carry"
  | "off_by_one"
  | "near_miss"
  | "missing_number"
  | "false_step"
  | "truncated"
  | "untagged"

/** Flaws that leave the text without a complete `<think>…</think><answer>…</answer>`. */
export const UNFINISHED: ReadonlyArray<Flaw> = ["truncated", "untagged"]

/** One corpus example: the task's question, the completion the model learns to write, and its grade. */
export interface Row {
  readonly prompt: string
  readonly completion: string
  readonly correct: boolean
  readonly flaw: Flaw
}

/** Default share of flawed solutions: enough that a base model lands around 30–60 % held-out accuracy. */
export const DEFAULT_WRONG_FRACTION = 0.35

/** Of the flawed rows, the share left unfinished (the rest are wrong but well formed). */
export const UNFINISHED_SHARE = 1 / 3

/** The R1 completion form. */
export const format = (think: string, answer: string): string => `<think>${think}</think><answer>${answer}</answer>`

/** Matches a complete completion (no nested tags). */
export const TAG_FORM = /^<think>[^<]*<\/think><answer>[^<]*<\/answer>$/

/** Which rows get which kind of flaw: exactly `round(count · wrongFraction)` flawed rows, placed at random. */
export const plan = (rng: Rng.Stream, count: number, wrongFraction: number): Array<"none" | "wrong" | "unfinished"> => {
  const flawed = Math.round(count * wrongFraction)
  const unfinished = Math.round(flawed * UNFINISHED_SHARE)
  const kinds: Array<"none" | "wrong" | "unfinished"> = []
  for (let i = 0; i < count; i++) kinds.push(i < unfinished ? "unfinished" : i < flawed ? "wrong" : "none")
  return rng.shuffle(kinds)
}

/**
 * An unfinished version of a solution: either cut somewhere after `<think>` and before
 * `</answer>` (as if generation hit its length limit), or the same steps with no tags at all.
 */
export const unfinish = (rng: Rng.Stream, think: string, answer: string): { completion: string; flaw: Flaw } => {
  if (rng.nextFloat() < 0.5) return { completion: `${think}\n${answer}`, flaw: "untagged" }
  const full = format(think, answer)
  const end = full.length - "</answer>".length
  const start = "<think>".length + 1
  return { completion: full.slice(0, start + rng.nextInt(end - start)), flaw: "truncated" }
}

/** Column types of a corpus batch. */
export type RowsType = { prompt: Utf8; completion: Utf8; correct: Bool; flaw: Utf8 }

/** Arrow schema of a corpus: prompt (raw question), completion, correct, flaw. */
export const Rows: ArrowSchema<RowsType> = new ArrowSchema(
  [
    new Field("prompt", new Utf8(), false),
    new Field("completion", new Utf8(), false),
    new Field("correct", new Bool(), false),
    new Field("flaw", new Utf8(), false)
  ],
  new Map([
    ["r1flow.schema", "corpus"],
    ["r1flow.schema_version", Batch.SCHEMA_VERSION]
  ])
)

/** A corpus record batch. */
export const toBatch = (rows: ReadonlyArray<Row>): RecordBatch<RowsType> => {
  const bits = new Uint8Array(Math.ceil(rows.length / 8))
  rows.forEach((r, i) => { if (r.correct) bits[i >> 3] |= 1 << (i & 7) })
  const correct = makeVector(makeData({ type: new Bool(), length: rows.length, nullCount: 0, data: bits }))
  return Batch.fromData(Rows, {
    prompt: Columns.makeUtf8(rows.map((r) => r.prompt)),
    completion: Columns.makeUtf8(rows.map((r) => r.completion)),
    correct,
    flaw: Columns.makeUtf8(rows.map((r) => r.flaw))
  })
}
