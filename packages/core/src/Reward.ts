/**
 * The one reward signature of r1flow.
 *
 * A reward scores a whole batch of rollouts at once and returns one `Float32Array` aligned with
 * the rows: `out[i]` is the score of row `i`, and `NaN` means "not applicable / could not score"
 * (no reference answer, no metadata for this task, …). It may be async. Its config is an Effect
 * Schema, and it has a name and a semver version, so a plugin package is just
 *
 *   export default Reward.define({ name, version, description, config, make: (config) => ({ score }) })
 *
 * Rewards never see Effect: `score` is a plain function, so a reward is easy to write, test and
 * run in a worker thread. The reward stage (`RewardStage`) adds weights, timeouts and the failure policy.
 */
import type { RecordBatch, Utf8, Vector } from "apache-arrow"
import type { Schema } from "effect"
import * as Batch from "./Batch.js"
import * as Columns from "./Columns.js"
import * as Plugin from "./Plugin.js"

/** What a reward sees: the rollouts batch, with its common columns already decoded. */
export interface Input {
  readonly rows: number
  /** Prompt text per row. */
  readonly prompts: ReadonlyArray<string>
  /** Completion text per row (what the model wrote, without the prompt). */
  readonly completions: ReadonlyArray<string>
  /**
   * What the prompt template itself opened every completion with (`"<think>"` when the template ends
   * the prompt inside the reasoning block, else `""`), from the batch's `Batch.completionPrefix`. A reward
   * that reads the completion's structure reads `completionPrefix + completion`; never the prompt, whose
   * text is the user's question (a question ending in a literal `<think>` opens nothing).
   */
  readonly completionPrefix: string
  /** Completion token ids, zero-copy (`Columns.row(completionIds, i)`). */
  readonly completionIds: Columns.ListView<Int32Array>
  /** Reference answer column (`null` where the task has none). */
  readonly answers: ReadonlyArray<string | null>
  /** The parsed `metadata` JSON column (`{}` when null or not an object). */
  readonly metadata: ReadonlyArray<Readonly<Record<string, unknown>>>
  /** `"stop"` (the model ended) or `"length"` (cut at the max length). */
  readonly finishReasons: ReadonlyArray<string>
  /** Rows sharing a group id are completions of the same prompt. */
  readonly groupIds: Int32Array
  /** The whole rollouts batch, for other columns (and, in a reward stage, the columns of the rewards listed before). */
  readonly batch: RecordBatch
  /** Aborted when the call's timeout passes; long async rewards should stop then. */
  readonly signal: AbortSignal
}

/** A reward: scores a batch, one number per row (`NaN` = not applicable). */
export interface Reward {
  readonly name: string
  readonly version: string
  score(input: Input): Float32Array | Promise<Float32Array>
}

/** What a reward plugin's `make` returns: the scoring function (name and version come from the plugin). */
export type Scorer = Omit<Reward, "name" | "version"> | Reward

/** A reward plugin: what a reward package exports by default. */
export type RewardPlugin<C = any> = Plugin.Plugin<"reward", C, Reward>

/**
 * Defines a reward plugin (a package's default export). `make` is called once per configured use,
 * with the decoded config; the reward it returns takes the plugin's name and version.
 */
export const define = <C>(def: {
  readonly name: string
  readonly version: string
  readonly description: string
  readonly config: Schema.Codec<C, any>
  readonly make: (config: C) => Scorer
}): RewardPlugin<C> =>
  Plugin.make("reward", {
    name: def.name,
    version: def.version,
    description: def.description,
    config: def.config,
    make: (config: C): Reward => {
      const scorer = def.make(config)
      return { name: def.name, version: def.version, score: (input) => scorer.score(input) }
    }
  })

const strings = (batch: RecordBatch, name: string): Array<string> => {
  const v = batch.getChild(name) as Vector<Utf8> | null
  if (v === null) throw new Error(`the batch has no "${name}" column`)
  const out = new Array<string>(v.length)
  for (let i = 0; i < v.length; i++) out[i] = v.get(i) ?? ""
  return out
}

const nullableStrings = (batch: RecordBatch, name: string): Array<string | null> => {
  const v = batch.getChild(name) as Vector<Utf8> | null
  if (v === null) throw new Error(`the batch has no "${name}" column`)
  const out = new Array<string | null>(v.length)
  for (let i = 0; i < v.length; i++) out[i] = v.get(i)
  return out
}

const EMPTY: Readonly<Record<string, unknown>> = Object.freeze({})

/** Parses one `metadata` cell; anything but a JSON object (null, bad JSON, an array) is `{}`. */
export const parseMetadata = (text: string | null): Readonly<Record<string, unknown>> => {
  if (text === null || text === "") return EMPTY
  try {
    const v = JSON.parse(text) as unknown
    return v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : EMPTY
  } catch {
    return EMPTY
  }
}

/**
 * Reads a rollouts batch (`Batch.Rollouts`, possibly with more columns) into a reward `Input`
 * without a signal. Token ids and group ids are zero-copy views; text columns are decoded once.
 */
export const inputFromBatch = (batch: RecordBatch): Omit<Input, "signal"> => ({
  rows: batch.numRows,
  prompts: strings(batch, "prompt"),
  completions: strings(batch, "completion"),
  completionPrefix: Batch.completionPrefix(batch.schema),
  completionIds: Columns.int32List(batch.getChild("completion_ids") as any),
  answers: nullableStrings(batch, "answer"),
  metadata: nullableStrings(batch, "metadata").map(parseMetadata),
  finishReasons: strings(batch, "finish_reason"),
  groupIds: Columns.int32Values(batch.getChild("group_id") as any),
  batch
})

/** Adds a signal (default: one that never aborts) to an input, e.g. to call `score` directly in a test. */
export const withSignal = (input: Omit<Input, "signal">, signal: AbortSignal = new AbortController().signal): Input => ({ ...input, signal })
