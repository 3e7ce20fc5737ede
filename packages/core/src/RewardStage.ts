/**
 * The reward stage: runs a list of weighted rewards over a rollouts batch and adds one
 * `reward_<name>` Float32 column per reward plus `reward`, the weighted total.
 *
 *   total[i] = Σ_k w_k · r_k[i]   over the rewards k with r_k[i] not NaN and w_k ≠ 0
 *
 * A row's total is NaN only when no weighted reward applies to it; such rows get advantage 0
 * downstream and are counted (`reward_frac_nan` in the step's metrics). Rewards run one after another
 * in the order listed, and each sees the columns of the rewards before it in `input.batch` (this is
 * how `length` reads the correctness written by `math-accuracy`).
 *
 * Routing by task. A reward declared for `tasks` (an entry's `tasks: ["arith"]`) scores only the rows
 * whose `metadata.task` is listed; every other row gets NaN in its column, so the total above skips it there:
 *
 *   S = { i : metadata[i].task ∈ tasks }        r_k[i] = reward_k(batch[S])[j]  for i = S[j],   NaN for i ∉ S
 *
 * The reward is called on `batch[S]`, the listed rows only (in batch order, every column kept: ids,
 * group ids, the earlier rewards' columns), so it never sees another task's row; when S is empty it is not
 * called at all. A reward without `tasks` scores every row, as before.
 *
 * Failure policy, per reward. A call fails when it throws, rejects, returns something other than a
 * `Float32Array` of one score per row, returns ±Infinity, runs past `timeoutMs` or past its worker's
 * memory. Then:
 *   - `onError: "fail"` (the default): the stage fails with a `StageError` naming the reward and the row
 *     (for a throw, the batch is re-scored row by row to find the first row that throws).
 *   - `onError: "nan"`: the failed rows become NaN (all rows, or just the non-finite ones), the
 *     reward's failure counters go up (`failures()`), and a warning naming the reward is logged.
 *
 * Isolation (`RewardRunner`). Rewards loaded from a package or path (`load`) run each in its own worker
 * thread by default: one message per batch (the batch as Arrow IPC bytes, transferred), the worker is
 * terminated when a call passes its timeout and restarted for the next call, so even a reward stuck
 * in `while (true) {}` never blocks the process beyond `timeoutMs`. Each worker's memory is bounded
 * (`LoadOptions.memoryMb`): its JS heap by V8, and all of it (ArrayBuffers and other memory outside
 * the heap included) by the parent, which stops the worker when the process grows past the limit
 * during a call. A reward that runs out of it fails its call like a throw (its `onError` applies) and
 * its worker is replaced for the next call, so it cannot take the trainer down. A reward given as an
 * object (`make`, or `load(..., { isolation: "in-process" })`) runs in the calling thread: an async
 * reward is abandoned at its timeout (and its `signal` aborted), but a synchronous reward cannot be
 * pre-empted; if it returns after its timeout, the call is treated as timed out.
 */
import { Field, Float32, Schema as ArrowSchema, type RecordBatch, type Utf8, type Vector } from "apache-arrow"
import { Effect, Schema } from "effect"
import * as Batch from "./Batch.js"
import * as Columns from "./Columns.js"
import * as CoreConfig from "./Config.js"
import * as Plugin from "./Plugin.js"
import * as Reward from "./Reward.js"
import * as RewardRunner from "./RewardRunner.js"
import * as Stage from "./Stage.js"

/** What happens when a reward call fails. */
export const OnError = Schema.Literals(["fail", "nan"])
/** What happens when a reward call fails. */
export type OnError = typeof OnError.Type

/** Default failure policy: stop the run, since a reward that throws is most often a bug. */
export const DEFAULT_ON_ERROR: OnError = "fail"
/** Default per-call timeout (one call scores a whole batch). */
export const DEFAULT_TIMEOUT_MS = 30_000
/**
 * Default memory limit of a reward's worker thread (MB): its JS heap (V8's old generation) and what the
 * process grows by during one of its calls (buffers outside the heap included). Without one a worker may
 * grow as large as the trainer itself may, so a reward that allocates without bound could exhaust the
 * machine and take the trainer down with it; a rule reward needs a few tens of MB.
 */
export const DEFAULT_WORKER_MEMORY_MB = 1024

/** One configured reward. */
export const Entry = Schema.Struct({
  /** Package name (`@r1flow/reward-format`) or path (`./my-reward.js`, relative to the config's directory). */
  plugin: Schema.String,
  /** Column name override: scores go to `reward_<name>` (default: the plugin's name). */
  name: Schema.optionalKey(Schema.String.check(Schema.isPattern(/^[A-Za-z0-9_-]+$/))),
  /** Weight in the total (default 1; 0 keeps the column for logging only). */
  weight: Schema.Finite.pipe(Schema.withDecodingDefaultKey(Effect.succeed(1))),
  /** The plugin's own config section (decoded by the plugin's schema). */
  config: Schema.optionalKey(Schema.Unknown),
  /** Failure policy (default `"fail"`). */
  onError: OnError.pipe(Schema.withDecodingDefaultKey(Effect.succeed(DEFAULT_ON_ERROR))),
  /** Per-call timeout in milliseconds (default 30000). */
  timeoutMs: Schema.Finite.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(DEFAULT_TIMEOUT_MS))),
  /** Score only the rows whose `metadata.task` is one of these (the others get NaN); default: every row. */
  tasks: Schema.optionalKey(Schema.NonEmptyArray(Schema.String))
})
/** One configured reward. */
export type Entry = typeof Entry.Type

/** The `rewards` section of an experiment config. */
export const Config = Schema.Struct({ rewards: Schema.Array(Entry).check(Schema.isMinLength(1)) })
/** The `rewards` section of an experiment config. */
export type Config = typeof Config.Type

/** Failure counters of one reward since the stage was made. */
export interface Failures {
  /** Calls that failed (thrown, rejected, timed out, wrong shape, or with non-finite scores). */
  readonly calls: number
  /** Rows set to NaN because of a failure. */
  readonly rows: number
  /** The last failure's message. */
  readonly last: string | null
}

/** A reward, with how the stage runs it. */
export interface StageEntry {
  readonly reward: Reward.Reward
  /** Default 1. */
  readonly weight?: number
  /** Default `"fail"`. */
  readonly onError?: OnError
  /** Default 30000. */
  readonly timeoutMs?: number
  /** Scores go to `reward_<column>` (default: the reward's name). */
  readonly column?: string
  /** Score only the rows of these tasks (`metadata.task`), NaN elsewhere (default: every row). */
  readonly tasks?: ReadonlyArray<string>
}

/** Columns of the stage's output: the scored batch with its `reward_<name>` columns. */
export type ScoredType = Batch.ScoredType & { [column: `reward_${string}`]: Float32 }

/** The reward stage: a core stage plus its reward names and failure counters. */
export interface RewardStage extends Stage.Stage<Batch.RolloutsType, ScoredType> {
  /** Column names, in order: scores are in `reward_<name>`. */
  readonly names: ReadonlyArray<string>
  /** Failure counters per reward name. */
  readonly failures: () => Readonly<Record<string, Failures>>
  /** Stops the worker threads (idempotent; workers never keep the process alive on their own). */
  readonly close: Effect.Effect<void>
}

// ---------------------------------------------------------------------------------------------
// The stage

/** One reward as the stage runs it. */
interface Slot {
  readonly label: string
  readonly column: string
  readonly weight: number
  readonly onError: OnError
  readonly timeoutMs: number
  readonly runner: RewardRunner.Runner
  /** The tasks it scores, or null for every row. */
  readonly tasks: ReadonlySet<string> | null
}

type Counters = Record<string, { calls: number; rows: number; last: string | null }>

const STAGE = "rewards"

const rowIds = (batch: RecordBatch): ((i: number) => string) => {
  const ids = batch.getChild("id") as Vector<Utf8> | null
  return (i) => JSON.stringify(ids?.get(i) ?? String(i))
}

/** Re-scores a failing batch row by row to name the first row that throws (only on the way to a `fail`). */
const findRow = async (slot: Slot, batch: RecordBatch): Promise<number | null> => {
  if (batch.numRows <= 1) return batch.numRows === 1 ? 0 : null
  const deadline = performance.now() + slot.timeoutMs
  for (let i = 0; i < batch.numRows && performance.now() < deadline; i++) {
    const o = await slot.runner.call(batch.slice(i, i + 1), null, slot.timeoutMs)
    if (o._tag === "threw") return i
    if (o._tag === "timeout" || o._tag === "oom") return null
  }
  return null
}

/** What went wrong in one call: the rows it fails, its scores so far, and a message naming the rows. */
interface Failed {
  readonly scores: Float32Array
  readonly rows: ReadonlyArray<number>
  readonly message: string
}

/** Scores that came back, failed in their ±Infinity rows (none when all are finite or NaN). */
const infiniteRows = (scores: Float32Array, id: (i: number) => string): Failed => {
  const rows: Array<number> = []
  for (let i = 0; i < scores.length; i++) if (scores[i] === Infinity || scores[i] === -Infinity) rows.push(i)
  const more = rows.length > 1 ? ` and ${rows.length - 1} more rows` : ""
  return { scores, rows, message: rows.length === 0 ? "" : `returned ${scores[rows[0]]} for row ${rows[0]} (id ${id(rows[0])})${more}; scores must be finite or NaN` }
}

/**
 * A call that failed as a whole fails every row. Its message names the batch by its ids, or, for a
 * throw under `fail` (about to stop the run), the first row that throws on its own.
 */
const wholeBatch = async (slot: Slot, batch: RecordBatch, message: string, threw: boolean): Promise<Failed> => {
  const rows = batch.numRows
  const id = rowIds(batch)
  let where = ""
  if (slot.onError === "fail" && threw) {
    const row = await findRow(slot, batch)
    where = row === null ? ` (on the batch of ${rows} rows; no single row reproduces it)` : ` (row ${row}, id ${id(row)}, throws on its own)`
  } else if (rows > 0) {
    where = ` (on the batch of ${rows} rows, ids ${id(0)}…${id(rows - 1)})`
  }
  return { scores: new Float32Array(rows), rows: Array.from({ length: rows }, (_, i) => i), message: message + where }
}

/** Runs one reward on a batch and applies its failure policy: its scores, or a `StageError` under `fail`. */
const scoreOne = (slot: Slot, counters: Counters, batch: RecordBatch, input: Omit<Reward.Input, "signal">): Effect.Effect<Float32Array, Stage.StageError> =>
  Effect.gen(function*() {
    const outcome = yield* Effect.promise(() => slot.runner.call(batch, input, slot.timeoutMs))
    const failed = outcome._tag === "ok"
      // A copy: the reward may reuse its buffer, and the column must not change under us.
      ? infiniteRows(outcome.scores.slice(), rowIds(batch))
      : yield* Effect.promise(() => wholeBatch(slot, batch, outcome.message, outcome._tag === "threw"))
    if (failed.rows.length === 0) return failed.scores
    const text = `reward "${slot.column}" (${slot.label}): ${failed.message}`
    if (slot.onError === "fail") return yield* new Stage.StageError({ stage: STAGE, message: text })
    for (const i of failed.rows) failed.scores[i] = NaN
    const c = counters[slot.column]
    c.calls += 1
    c.rows += failed.rows.length
    c.last = text
    yield* Effect.logWarning(`${text}; ${failed.rows.length} row(s) scored NaN (onError: "nan")`)
    return failed.scores
  })

/** The rows a reward scores: those of its tasks, or null when that is every row (no `tasks`, or all rows listed). */
const routedRows = (slot: Slot, metadata: ReadonlyArray<Readonly<Record<string, unknown>>>): Array<number> | null => {
  if (slot.tasks === null) return null
  const rows: Array<number> = []
  for (let i = 0; i < metadata.length; i++) {
    const task = metadata[i].task
    if (typeof task === "string" && slot.tasks.has(task)) rows.push(i)
  }
  return rows.length === metadata.length ? null : rows
}

/** One reward's column over the whole batch: called on its tasks' rows only (scattered back, NaN elsewhere). */
const scoreRouted = (slot: Slot, counters: Counters, current: RecordBatch, decoded: Omit<Reward.Input, "signal">): Effect.Effect<Float32Array, Stage.StageError> =>
  Effect.gen(function*() {
    const rows = current.numRows
    const picked = rows === 0 ? null : routedRows(slot, decoded.metadata)
    if (picked === null) return rows === 0 ? new Float32Array(0) : yield* scoreOne(slot, counters, current, { ...decoded, batch: current })
    const column = new Float32Array(rows).fill(NaN)
    if (picked.length === 0) return column
    // The sub-batch keeps every column, so the reward's view (ids, group ids, earlier rewards) is consistent.
    const sub = Stage.takeRows(current, picked)
    const scores = yield* scoreOne(slot, counters, sub, Reward.inputFromBatch(sub))
    for (let j = 0; j < picked.length; j++) column[picked[j]] = scores[j]
    return column
  })

/** Runs every reward in order, each seeing the columns before it, and adds the columns and the total. */
const scoreAll = (slots: ReadonlyArray<Slot>, counters: Counters, output: ArrowSchema<ScoredType>, batch: RecordBatch<Batch.RolloutsType>) =>
  Effect.gen(function*() {
    const rows = batch.numRows
    const columns: Record<string, Vector> = {}
    const total = new Float32Array(rows).fill(NaN)
    let current: RecordBatch = batch
    const decoded = Reward.inputFromBatch(batch)
    for (const slot of slots) {
      const scores = yield* scoreRouted(slot, counters, current, decoded)
      const name = Batch.rewardColumn(slot.column)
      const column = Columns.makeFloat32(scores)
      columns[name] = column
      if (slot.weight !== 0) {
        for (let i = 0; i < rows; i++) {
          const v = scores[i]
          if (v === v) total[i] = total[i] === total[i] ? total[i] + slot.weight * v : slot.weight * v
        }
      }
      // Later rewards see this one's column (e.g. `length` reads correctness).
      current = yield* Stage.addColumns(STAGE, current, new ArrowSchema([new Field(name, new Float32(), true)]), { [name]: column })
    }
    columns.reward = Columns.makeFloat32(total)
    return yield* Stage.addColumns(STAGE, batch, output, columns)
  })

/** The stage over its slots; every reward writes its own column. */
const fromSlots = (slots: ReadonlyArray<Slot>): RewardStage => {
  const names = slots.map((s) => s.column)
  const seen = new Set<string>()
  for (const n of names) {
    if (seen.has(n)) throw new Error(`two rewards write the column "${Batch.rewardColumn(n)}"; give one of them another name`)
    seen.add(n)
  }
  const counters: Counters = Object.fromEntries(names.map((n) => [n, { calls: 0, rows: 0, last: null }]))
  const output = Batch.scoredWith(names) as unknown as ArrowSchema<ScoredType>
  return {
    ...Stage.make({ name: STAGE, input: Batch.Rollouts, output, transform: (batch) => scoreAll(slots, counters, output, batch) }),
    names,
    failures: () => Object.fromEntries(names.map((n) => [n, { ...counters[n] }])),
    close: Effect.promise(() => Promise.all(slots.map((s) => s.runner.close()))).pipe(Effect.asVoid)
  }
}

/** A reward stage over rewards given as objects; they run in this thread (see the module doc on timeouts). */
export const make = (entries: ReadonlyArray<StageEntry>): RewardStage =>
  fromSlots(
    entries.map((e, i) => ({
      label: `rewards[${i}] ${e.reward.name}@${e.reward.version}`,
      column: e.column ?? e.reward.name,
      weight: e.weight ?? 1,
      onError: e.onError ?? DEFAULT_ON_ERROR,
      timeoutMs: e.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      runner: RewardRunner.inProcess(e.reward),
      tasks: e.tasks === undefined ? null : new Set(e.tasks)
    }))
  )

/** How `load` runs the rewards. */
export interface LoadOptions {
  /** Where relative plugin paths and packages resolve (default: the working directory). */
  readonly from?: string
  /** `"worker"` (default): each reward in its own worker thread; `"in-process"`: in this thread. */
  readonly isolation?: "worker" | "in-process"
  /**
   * Memory limit of each worker (MB, default `DEFAULT_WORKER_MEMORY_MB`): its JS heap, and the growth of
   * the process during one of its calls, off-heap buffers included. A process-wide `--max-old-space-size`
   * (also through `NODE_OPTIONS`) overrides the heap part: V8 applies that flag to every heap.
   */
  readonly memoryMb?: number
}

/** `rewards[i].name` would write a column an earlier reward already writes. */
const columnTaken = (taken: Map<string, number>, column: string, i: number, prefix: string): CoreConfig.ConfigError | null => {
  const before = taken.get(column)
  if (before === undefined) {
    taken.set(column, i)
    return null
  }
  return new CoreConfig.ConfigError({
    source: "rewards",
    problems: [`${CoreConfig.formatPath(["rewards", i, "name"], prefix)}: the column "${Batch.rewardColumn(column)}" is already written by rewards[${before}]; set a different "name"`]
  })
}

/**
 * Checks a raw `{ rewards }` section without running anything, so a config can be refused before a
 * run starts: the entries decode (unknown keys are errors), each plugin loads, its `config` decodes by
 * the plugin's own schema, and no two rewards write one column. `make` is not called and no worker
 * starts. `prefix` is the section's place in the whole config (`stages[2].config`); every problem
 * names `<prefix>.rewards[i]…`. Returns the decoded section.
 */
export const check = (raw: unknown, options: { readonly from?: string; readonly prefix?: string } = {}): Effect.Effect<Config, Plugin.PluginError | CoreConfig.ConfigError> =>
  Effect.gen(function*() {
    const prefix = options.prefix ?? ""
    const config = yield* CoreConfig.decode(Config, raw, { source: "rewards", prefix })
    const taken = new Map<string, number>()
    for (const [i, entry] of config.rewards.entries()) {
      const where = CoreConfig.formatPath(["rewards", i], prefix)
      const plugin = yield* Plugin.load(entry.plugin, { kind: "reward", from: options.from ?? process.cwd() }).pipe(
        Effect.mapError((e) => new Plugin.PluginError({ plugin: e.plugin, message: `${where}.plugin: ${e.message}` }))
      )
      yield* Plugin.decodeConfig(plugin, entry.config, `${where}.config`)
      const clash = columnTaken(taken, entry.name ?? plugin.name, i, prefix)
      if (clash !== null) return yield* clash
    }
    return config
  })

/**
 * Loads each configured reward through the plugin registry (`Plugin.load(spec, { kind: "reward" })`,
 * then `Plugin.instantiate` with `rewards[i].config`) and builds the stage. With `isolation: "worker"`
 * (the default) each reward also gets its own worker thread, started here so a plugin that cannot
 * load in a worker fails now, not mid-run. See `LoadOptions` for where plugins resolve and the
 * workers' memory limit.
 */
export const load = (
  config: Config,
  options: LoadOptions = {}
): Effect.Effect<RewardStage, Plugin.PluginError | CoreConfig.ConfigError> =>
  Effect.gen(function*() {
    const from = options.from ?? process.cwd()
    const slots: Array<Slot> = []
    const starts: Array<{ spec: string; start: () => Promise<unknown> }> = []
    const taken = new Map<string, number>()
    const stopAll = Effect.promise(() => Promise.all(slots.map((s) => s.runner.close())))
    for (const [i, entry] of config.rewards.entries()) {
      const plugin = yield* Plugin.load(entry.plugin, { kind: "reward", from })
      const reward = (yield* Plugin.instantiate(plugin, entry.config, `rewards[${i}].config`)) as Reward.Reward
      if (reward === null || typeof reward !== "object" || typeof reward.score !== "function") {
        yield* stopAll
        return yield* new Plugin.PluginError({ plugin: entry.plugin, message: `make(config) returned ${RewardRunner.describeValue(reward)}, not a reward with a score function` })
      }
      const column = entry.name ?? plugin.name
      const clash = columnTaken(taken, column, i, "")
      if (clash !== null) {
        yield* stopAll
        return yield* clash
      }
      const label = `rewards[${i}] ${plugin.name}@${plugin.version}`
      let runner: RewardRunner.Runner = RewardRunner.inProcess({ name: plugin.name, version: plugin.version, score: (input) => reward.score(input) })
      if (options.isolation !== "in-process") {
        const w = RewardRunner.inWorker({
          data: { spec: entry.plugin, from, rawConfig: entry.config, where: `rewards[${i}].config` },
          label,
          memoryMb: options.memoryMb ?? DEFAULT_WORKER_MEMORY_MB
        })
        starts.push({ spec: entry.plugin, start: w.start })
        runner = w.runner
      }
      slots.push({ label, column, weight: entry.weight, onError: entry.onError, timeoutMs: entry.timeoutMs, runner, tasks: entry.tasks === undefined ? null : new Set(entry.tasks) })
    }
    // Workers start together: each imports its plugin (and effect, arrow) on its own thread.
    const startErrors = yield* Effect.promise(() => Promise.all(starts.map((s) => s.start().then(() => null, (e: Error) => ({ spec: s.spec, message: e.message })))))
    const firstError = startErrors.find((e) => e !== null)
    if (firstError !== undefined && firstError !== null) {
      yield* stopAll
      return yield* new Plugin.PluginError({ plugin: firstError.spec, message: `cannot run in a worker thread: ${firstError.message}` })
    }
    return fromSlots(slots)
  })

/** `load`, with the workers stopped when the scope closes. */
export const loadScoped = (config: Config, options: LoadOptions = {}) =>
  Effect.acquireRelease(load(config, options), (stage) => stage.close)
