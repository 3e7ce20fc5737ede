/**
 * The conformance suite every reward plugin runs, plus helpers to build rollouts batches by hand.
 *
 * Core does not depend on a test runner: `run` returns plain results, and a plugin's test does
 *
 *   for (const r of await Conformance.run(plugin, { config })) expect(r.ok, `${r.check}: ${r.detail}`).toBe(true)
 *
 * Checks: the plugin descriptor is valid and instantiates; scores are aligned with the rows (a
 * `Float32Array` of one score per row); every score is finite or NaN; scoring is deterministic
 * (twice on the same batch, and on a fresh decode of it, gives the same bits); the input is not
 * mutated; empty completions and huge (1 MB) completions, including adversarial ones (thousands of
 * unclosed tags and braces), are scored without error.
 */
import type { RecordBatch } from "apache-arrow"
import { Effect } from "effect"
import * as Batch from "./Batch.js"
import * as Columns from "./Columns.js"
import * as Plugin from "./Plugin.js"
import * as Reward from "./Reward.js"

/** One hand-written rollout; everything but `completion` has a default. */
export interface Row {
  readonly completion: string
  readonly prompt?: string
  /** Reference answer (default `null`). */
  readonly answer?: string | null
  /** Metadata object, stored as JSON (default `null`). */
  readonly metadata?: Readonly<Record<string, unknown>> | null
  /** Default `"stop"`. */
  readonly finishReason?: "stop" | "length"
  /** Default: the row index (every row its own group). */
  readonly groupId?: number
  readonly id?: string
  /** Completion token ids (default: one id per UTF-16 code unit, a stand-in for a tokenizer). */
  readonly completionIds?: ReadonlyArray<number>
}

const codeUnits = (text: string): Int32Array => {
  const out = new Int32Array(text.length)
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i)
  return out
}

/** How a hand-written batch was "sampled". */
export interface BatchOptions {
  /** The template's completion prefix the batch records (`Batch.completionPrefix`, e.g. `<think>`); default none. */
  readonly completionPrefix?: string
}

/** A `Batch.Rollouts` record batch from hand-written rows (prompt ids are the prompt's code units; log-probs 0). */
export const makeBatch = (rows: ReadonlyArray<Row>, options: BatchOptions = {}): RecordBatch<Batch.RolloutsType> => {
  const prompts = rows.map((r) => r.prompt ?? "")
  const ids = rows.map((r) => (r.completionIds !== undefined ? Int32Array.from(r.completionIds) : codeUnits(r.completion)))
  return Batch.fromData(Batch.withCompletionPrefix(Batch.Rollouts, options.completionPrefix ?? ""), {
    id: Columns.makeUtf8(rows.map((r, i) => r.id ?? `row-${i}`)),
    group_id: Columns.makeInt32(Int32Array.from(rows.map((r, i) => r.groupId ?? i))),
    prompt: Columns.makeUtf8(prompts),
    prompt_ids: Columns.int32ListFromRows(prompts.map(codeUnits)),
    answer: Columns.makeUtf8(rows.map((r) => r.answer ?? null)),
    metadata: Columns.makeUtf8(rows.map((r) => (r.metadata === undefined || r.metadata === null ? null : JSON.stringify(r.metadata)))),
    completion: Columns.makeUtf8(rows.map((r) => r.completion)),
    completion_ids: Columns.int32ListFromRows(ids),
    logprobs: Columns.float32ListFromRows(ids.map((x) => new Float32Array(x.length))),
    finish_reason: Columns.makeUtf8(rows.map((r) => r.finishReason ?? "stop")),
    prompt_length: Columns.makeInt32(Int32Array.from(prompts.map((p) => p.length))),
    completion_length: Columns.makeInt32(Int32Array.from(ids.map((x) => x.length)))
  })
}

/** A reward `Input` from hand-written rows (with a signal that never aborts). */
export const makeInput = (rows: ReadonlyArray<Row>, options: BatchOptions = {}): Reward.Input => Reward.withSignal(Reward.inputFromBatch(makeBatch(rows, options)))

/** Scores hand-written rows with `reward` and returns the scores as a plain array (for `toEqual`). */
export const score = async (reward: Reward.Reward, rows: ReadonlyArray<Row>): Promise<Array<number>> =>
  Array.from(await reward.score(makeInput(rows)))

/** Varied rows: R1 format, `\boxed`, GSM8K `####`, countdown metadata, CJK, no answer, truncated. */
export const sampleRows: ReadonlyArray<Row> = [
  { prompt: "What is 2+2?", completion: "<think>\n2 plus 2 is 4.\n</think>\n<answer>\n4\n</answer>", answer: "4", groupId: 0 },
  { prompt: "What is 2+2?", completion: "<think>guess</think><answer>5</answer>", answer: "4", groupId: 0 },
  { prompt: "What is 3/4 as a fraction?", completion: "So the answer is $\\boxed{\\frac{3}{4}}$.", answer: "3/4", groupId: 1 },
  { prompt: "Eggs?", completion: "She sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18.\n#### 18", answer: "18", groupId: 1 },
  {
    prompt: "Using the numbers [25, 7, 3], create an equation that equals 54.",
    completion: "<think>25-7=18, 18*3=54</think>\n<answer>(25 - 7) * 3</answer>",
    answer: "54",
    metadata: { numbers: [25, 7, 3], target: 54 },
    groupId: 2
  },
  { prompt: "Using the numbers [1, 2], make 3.", completion: "<answer>2**10</answer>", answer: "3", metadata: { numbers: [1, 2], target: 3 }, groupId: 2 },
  { prompt: "2+2?", completion: "<think>我们计算 2+2 等于 4</think><answer>4</answer>", answer: "4", groupId: 3 },
  { prompt: "Say hi.", completion: "hi hi hi hi hi hi hi hi hi hi hi hi", answer: null, metadata: null, groupId: 3 },
  { prompt: "Long?", completion: "<think>the the the the", answer: "1", finishReason: "length", groupId: 4 },
  { prompt: "Nested?", completion: "<think><think>x</think></think><answer><answer>7</answer></answer>", answer: "7", groupId: 4 }
]

const MB = 1 << 20

const repeatTo = (unit: string, length: number): string => unit.repeat(Math.ceil(length / unit.length)).slice(0, length)

/** 1 MB completions that defeat naive parsers: unclosed tags and braces, one huge word, long digit runs. */
const hugeRows = (): Array<Row> => {
  const metadata = { numbers: [1, 2, 3], target: 6 }
  return [
    { completion: repeatTo("the cat sat on the mat. ", MB), answer: "1", metadata },
    { completion: repeatTo("<think>", MB), answer: "1", metadata },
    { completion: "<answer>" + repeatTo("\\boxed{", MB - 8), answer: "1", metadata },
    { completion: "<think>" + repeatTo("(1+", MB / 2) + "</think><answer>" + repeatTo("(1+2)*", MB / 2 - 64) + "3</answer>", answer: "1", metadata },
    { completion: repeatTo("9", MB), answer: "9", metadata },
    { completion: repeatTo("a", MB), answer: null, metadata: null },
    { completion: repeatTo("<answer>1</answer>", MB), answer: "1", metadata },
    { completion: repeatTo("数学", MB), answer: "1", metadata }
  ]
}

/** One check's outcome. */
export interface Result {
  readonly check: string
  readonly ok: boolean
  readonly detail: string
}

const sameBits = (a: Float32Array, b: Float32Array): number => {
  if (a.length !== b.length) return 0
  for (let i = 0; i < a.length; i++) if (!(Object.is(a[i], b[i]) || (a[i] === 0 && b[i] === 0))) return i
  return -1
}

const shapeProblem = (out: unknown, rows: number): string | null =>
  !(out instanceof Float32Array) ? "did not return a Float32Array" : out.length !== rows ? `returned ${out.length} scores for ${rows} rows` : null

const infiniteRow = (out: Float32Array): number => out.findIndex((v) => v === Infinity || v === -Infinity)

const isPlugin = (x: unknown): x is Reward.RewardPlugin => x !== null && typeof x === "object" && "kind" in x && "make" in x

const freeze = (input: Reward.Input): Reward.Input => {
  for (const a of [input.prompts, input.completions, input.answers, input.metadata, input.finishReasons]) Object.freeze(a)
  return input
}

const attempt = async (check: string, body: () => Promise<string>): Promise<Result> => {
  try {
    return { check, ok: true, detail: await body() }
  } catch (e) {
    return { check, ok: false, detail: e instanceof Error ? e.message : String(e) }
  }
}

const scoreChecked = async (reward: Reward.Reward, input: Reward.Input, what: string): Promise<Float32Array> => {
  let out: unknown
  try {
    out = await reward.score(input)
  } catch (e) {
    throw new Error(`${what}: threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`, { cause: e })
  }
  const shape = shapeProblem(out, input.rows)
  if (shape !== null) throw new Error(`${what}: ${shape}`)
  const bad = infiniteRow(out as Float32Array)
  if (bad >= 0) throw new Error(`${what}: row ${bad} scored ${(out as Float32Array)[bad]}; scores must be finite or NaN`)
  return out as Float32Array
}

/**
 * Runs the conformance checks on a reward plugin (instantiated with `config`, default `{}`) or on a
 * reward object. `sampleRows` replaces the built-in sample batch for the alignment and determinism
 * checks; `prepare` adds columns to every batch the suite builds (for a reward that reads the column
 * of a reward listed before it, such as `length` reading correctness).
 */
export const run = async (
  subject: Reward.Reward | Reward.RewardPlugin,
  options: { readonly config?: unknown; readonly sampleRows?: ReadonlyArray<Row>; readonly prepare?: (batch: RecordBatch) => RecordBatch } = {}
): Promise<Array<Result>> => {
  const makeInput = (rows: ReadonlyArray<Row>): Reward.Input => {
    const batch = makeBatch(rows)
    return Reward.withSignal(Reward.inputFromBatch(options.prepare === undefined ? batch : options.prepare(batch)))
  }
  const results: Array<Result> = []
  let reward: Reward.Reward
  if (isPlugin(subject)) {
    const loaded = await Effect.runPromise(
      Effect.result(Effect.flatMap(Plugin.validate(subject.name, { default: subject }, "reward"), (p) => Plugin.instantiate(p, options.config, "config")))
    )
    if (loaded._tag === "Failure") {
      const e = loaded.failure
      return [{ check: "descriptor", ok: false, detail: "problems" in e ? e.message : `${e.plugin}: ${e.message}` }]
    }
    reward = loaded.success as Reward.Reward
    results.push({ check: "descriptor", ok: true, detail: `${subject.name}@${subject.version} is a valid reward plugin and instantiates` })
  } else {
    reward = subject
  }
  const rows = options.sampleRows ?? sampleRows

  results.push(
    await attempt("aligned length", async () => {
      await scoreChecked(reward, makeInput(rows), "the sample batch")
      await scoreChecked(reward, makeInput(rows.slice(0, 1)), "a one-row batch")
      return `one score per row on batches of ${rows.length} and 1 rows`
    })
  )
  results.push(
    await attempt("finite or NaN", async () => {
      const out = await scoreChecked(reward, makeInput(rows), "the sample batch")
      const nan = out.filter((v) => v !== v).length
      return `${out.length - nan} finite and ${nan} NaN scores`
    })
  )
  results.push(
    await attempt("deterministic", async () => {
      const a = await scoreChecked(reward, makeInput(rows), "first call")
      const b = await scoreChecked(reward, makeInput(rows), "second call")
      const c = await scoreChecked(reward, makeInput(rows), "third call")
      for (const [x, y] of [[a, b], [a, c]]) {
        const at = sameBits(x, y)
        if (at >= 0) throw new Error(`row ${at} scored ${x[at]} then ${y[at]}`)
      }
      return "the same scores on three calls"
    })
  )
  results.push(
    await attempt("does not mutate its input", async () => {
      const input = freeze(makeInput(rows))
      const before = JSON.stringify([input.completions, input.answers, input.metadata, Array.from(input.completionIds.values)])
      await scoreChecked(reward, input, "a frozen input")
      const after = JSON.stringify([input.completions, input.answers, input.metadata, Array.from(input.completionIds.values)])
      if (before !== after) throw new Error("the input changed during score")
      return "the input is unchanged"
    })
  )
  results.push(
    await attempt("empty completions", async () => {
      const empty: Array<Row> = [
        { completion: "", answer: "1", metadata: { numbers: [1], target: 1 } },
        { completion: "", answer: null, metadata: null, finishReason: "length" },
        { completion: " \n", answer: "", metadata: {} }
      ]
      const out = await scoreChecked(reward, makeInput(empty), "empty completions")
      return `scores ${Array.from(out).join(", ")}`
    })
  )
  results.push(
    await attempt("huge completions", async () => {
      const huge = hugeRows()
      const started = performance.now()
      const out = await scoreChecked(reward, makeInput(huge), `${huge.length} completions of 1 MB`)
      return `${huge.length} × 1 MB scored in ${Math.round(performance.now() - started)} ms (${Array.from(out).map((v) => Math.round(v * 1000) / 1000).join(", ")})`
    })
  )
  return results
}
