/**
 * The Arrow schemas at each boundary of the R1 loop, and helpers to build record batches of them.
 *
 *   prompts ─► rollouts ─► scored ─► advantages
 *
 * Each schema adds columns to the one before; a stage never rewrites a column it was given.
 * Every schema carries `r1flow.schema` and `r1flow.schema_version` metadata so a file read back
 * later can say which contract it was written under.
 */
import {
  Field,
  Float32,
  Int32,
  List,
  makeData,
  RecordBatch,
  Schema,
  Struct,
  Utf8,
  type Data,
  type DataType,
  type TypeMap,
  type Vector
} from "apache-arrow"

/** Version of the batch contracts; bumped when a column changes meaning or type. */
export const SCHEMA_VERSION = "1"

/** `List<Int32>`: token ids. */
export const Int32List = () => new List(new Field("item", new Int32(), false))
/** `List<Float32>`: per-token values such as log-probs. */
export const Float32List = () => new List(new Field("item", new Float32(), false))

const meta = (name: string) =>
  new Map([
    ["r1flow.schema", name],
    ["r1flow.schema_version", SCHEMA_VERSION]
  ])

const promptFields = [
  new Field("id", new Utf8(), false),
  new Field("group_id", new Int32(), false),
  new Field("prompt", new Utf8(), false),
  new Field("prompt_ids", Int32List(), false),
  new Field("answer", new Utf8(), true),
  new Field("metadata", new Utf8(), true)
] as const

const rolloutFields = [
  ...promptFields,
  new Field("completion", new Utf8(), false),
  new Field("completion_ids", Int32List(), false),
  new Field("logprobs", Float32List(), false),
  new Field("finish_reason", new Utf8(), false),
  new Field("prompt_length", new Int32(), false),
  new Field("completion_length", new Int32(), false)
] as const

/** Column types of a prompts batch. `metadata` is a JSON object string (task-specific fields). */
export type PromptsType = {
  id: Utf8
  group_id: Int32
  prompt: Utf8
  prompt_ids: List<Int32>
  answer: Utf8
  metadata: Utf8
}

/** Column types of a rollouts batch: one row per sampled completion; G rows share a `group_id`. */
export type RolloutsType = PromptsType & {
  completion: Utf8
  completion_ids: List<Int32>
  logprobs: List<Float32>
  finish_reason: Utf8
  prompt_length: Int32
  completion_length: Int32
}

/**
 * Column types of a scored batch: `reward` is the weighted total, and one `reward_<name>` column per reward.
 * The one scored type: the reward stage's output, dynamic sampling's and the advantages stage's input.
 */
export type ScoredType = RolloutsType & { reward: Float32 } & { [column: `reward_${string}`]: Float32 }

/** Column types of an advantages batch. */
export type AdvantagesType = ScoredType & { advantage: Float32 }

/** Prompts entering the loop: id, group, text, prompt token ids, reference answer, metadata JSON. */
export const Prompts: Schema<PromptsType> = new Schema([...promptFields], meta("prompts"))

/** Sampled completions with the sampling policy's per-token log-probs and finish reason (`stop` | `length`). */
export const Rollouts: Schema<RolloutsType> = new Schema([...rolloutFields], meta("rollouts"))

/**
 * Schema metadata key of a rollouts batch (and of the batches built from it, which keep its metadata):
 * the sampling temperature τ its `logprobs` were recorded at (`rolloutsAt`, `logprobTemperature`).
 */
export const TEMPERATURE_KEY = "r1flow.sampling.temperature"

/**
 * The rollouts schema for completions sampled at temperature τ (0 = greedy): `logprobs` are then
 * log softmax(logits / τ), untempered for τ = 0. The trainer reads τ back (`logprobTemperature`).
 */
export const rolloutsAt = (temperature: number): Schema<RolloutsType> =>
  new Schema([...rolloutFields], new Map([...meta("rollouts"), [TEMPERATURE_KEY, String(temperature)]]))

/**
 * The τ of a batch's `logprobs` column: its recorded sampling temperature, or 1 for greedy rollouts and for
 * batches that record none (their log-probs are untempered). An unreadable value is an `Error` naming it.
 */
export const logprobTemperature = (schema: Schema): number => {
  const raw = schema.metadata.get(TEMPERATURE_KEY)
  if (raw === undefined) return 1
  const t = Number(raw)
  if (raw.trim() === "" || !Number.isFinite(t) || t < 0) throw new Error(`schema metadata "${TEMPERATURE_KEY}" is ${JSON.stringify(raw)}, not a temperature ≥ 0`)
  return t === 0 ? 1 : t
}

/**
 * Schema metadata key of a prompts batch (and of the batches built from it: rollouts, scored): the text
 * the prompt template itself ended the prompt with for the completion to continue, e.g. `<think>` when
 * the template opens the reasoning block. Rewards get it as `Reward.Input.completionPrefix`; it is never
 * inferred from the prompt text, which holds the user's question.
 */
export const COMPLETION_PREFIX_KEY = "r1flow.template.completion_prefix"

/** The completion prefix a batch's schema records (`""` when none). */
export const completionPrefix = (schema: Schema): string => schema.metadata.get(COMPLETION_PREFIX_KEY) ?? ""

/** `schema` recording `prefix` as its completion prefix (`schema` itself when `prefix` is empty). */
export const withCompletionPrefix = <T extends TypeMap>(schema: Schema<T>, prefix: string): Schema<T> =>
  prefix === "" ? schema : new Schema(schema.fields, new Map([...schema.metadata, [COMPLETION_PREFIX_KEY, prefix]]))

/** Rollouts with the weighted total reward (plus one `reward_<name>` Float32 column per reward function). */
export const Scored: Schema<ScoredType> = new Schema([...rolloutFields, new Field("reward", new Float32(), true)], meta("scored"))

/** Scored rollouts with the per-row advantage. */
export const Advantages: Schema<AdvantagesType> = new Schema(
  [...rolloutFields, new Field("reward", new Float32(), true), new Field("advantage", new Float32(), false)],
  meta("advantages")
)

/** The column name a reward's score is written under. */
export const rewardColumn = (rewardName: string): `reward_${string}` => `reward_${rewardName}`

/** Scored schema for a given list of reward names (each as a nullable Float32 column). */
export const scoredWith = (rewardNames: ReadonlyArray<string>): Schema =>
  new Schema(
    [...rolloutFields, ...rewardNames.map((n) => new Field(rewardColumn(n), new Float32(), true)), new Field("reward", new Float32(), true)],
    meta("scored")
  )

/** A record batch from whole column `Data` (or single-chunk vectors), in the order of `schema`'s fields. */
export const fromData = <T extends TypeMap>(schema: Schema<T>, columns: Record<string, Data<DataType> | Vector<DataType>>): RecordBatch<T> => {
  const children = schema.fields.map((f) => {
    const c = columns[f.name]
    if (c === undefined) throw new Error(`column "${f.name}" is missing`)
    if (!("data" in c)) return c
    if (c.data.length !== 1) throw new Error(`column "${f.name}" has ${c.data.length} chunks; a record batch column must be one chunk`)
    return c.data[0]
  })
  const length = children.length > 0 ? children[0].length : 0
  for (const [i, c] of children.entries()) {
    if (c.length !== length) throw new Error(`column "${schema.fields[i].name}" has ${c.length} rows, expected ${length}`)
  }
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length, nullCount: 0, children }))
}
