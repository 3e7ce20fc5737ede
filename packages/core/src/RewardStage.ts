/**
 * The reward stage: runs a list of weighted rewards over a rollouts batch and adds one
 * `reward_<name>` Float32 column per reward plus `reward`, the weighted total.
 *
 *   total[i] = Σ_k w_k · r_k[i]   over the rewards k with r_k[i] not NaN and w_k ≠ 0
 *
 * A row's total is NaN only when no weighted reward applies to it; such rows get advantage 0
 * downstream and are counted (`reward_frac_nan` in `metrics`). Rewards run one after another in
 * the order listed, and each sees the columns of the rewards before it in `input.batch` (this is how
 * `length` reads the correctness written by `math-accuracy`).
 *
 * Failure policy, per reward. A call fails when it throws, rejects, returns something other than a
 * `Float32Array` of one score per row, returns ±Infinity, or runs past `timeoutMs`. Then:
 *   - `onError: "fail"` (the default): the stage fails with a `StageError` naming the reward and the row
 *     (for a throw, the batch is re-scored row by row to find the first row that throws).
 *   - `onError: "nan"`: the failed rows become NaN (all rows, or just the non-finite ones), the
 *     reward's failure counters go up (`failures()`, and `rewards/<name>/failed_*` in `metrics`), and a
 *     warning naming the reward is logged.
 *
 * Isolation. Rewards loaded from a package or path (`load`) run each in its own worker thread by
 * default: one message per batch (the batch as Arrow IPC bytes, transferred), the worker is
 * terminated when a call passes its timeout and restarted for the next call, so even a reward stuck
 * in `while (true) {}` never blocks the process beyond `timeoutMs`. Each worker's memory is bounded
 * (`LoadOptions.memoryMb`): its JS heap by V8, and all of it (ArrayBuffers and other memory outside
 * the heap included) by the parent, which stops the worker when the process grows past the limit
 * during a call. A reward that runs out of it fails its call like a throw (its `onError` applies) and
 * its worker is replaced for the next call, so it cannot take the trainer down. A reward given as an object (`make`, or
 * `load(..., { isolation: "in-process" })`) runs in the calling thread: an async reward
 * is abandoned at its timeout (and its `signal` aborted), but a synchronous reward cannot be
 * pre-empted; if it returns after its timeout, the call is treated as timed out.
 */
import { existsSync, readFileSync } from "node:fs"
import { createRequire } from "node:module"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { Worker } from "node:worker_threads"
import { Field, Float32, Schema as ArrowSchema, Table, tableToIPC, type RecordBatch, type Utf8, type Vector } from "apache-arrow"
import { Effect, Schema } from "effect"
import * as Batch from "./Batch.js"
import * as Columns from "./Columns.js"
import * as CoreConfig from "./Config.js"
import * as Plugin from "./Plugin.js"
import type * as Reward from "./Reward.js"
import { inputFromBatch } from "./Reward.js"
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
  timeoutMs: Schema.Finite.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(DEFAULT_TIMEOUT_MS)))
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
}

/** Columns of the stage's output: the scored batch with its `reward_<name>` columns. */
export type ScoredType = Batch.ScoredType & { [column: `reward_${string}`]: Float32 }

/** The reward stage: a core stage plus its reward names, failure counters and metrics. */
export interface RewardStage extends Stage.Stage<Batch.RolloutsType, ScoredType> {
  /** Column names, in order: scores are in `reward_<name>`. */
  readonly names: ReadonlyArray<string>
  /** Failure counters per reward name. */
  readonly failures: () => Readonly<Record<string, Failures>>
  /** `metrics(scored, names)` plus the failure counters. */
  readonly metrics: (scored: RecordBatch) => Record<string, number>
  /** Stops the worker threads (idempotent; workers never keep the process alive on their own). */
  readonly close: Effect.Effect<void>
}

// ---------------------------------------------------------------------------------------------
// Running one call

type Outcome =
  | { readonly _tag: "ok"; readonly scores: Float32Array }
  | { readonly _tag: "threw"; readonly message: string }
  | { readonly _tag: "bad"; readonly message: string }
  | { readonly _tag: "timeout"; readonly message: string }
  | { readonly _tag: "oom"; readonly message: string }

/** Runs a reward on a batch, never throwing; `input` is the batch already decoded (in-process runners use it). */
interface Runner {
  readonly call: (batch: RecordBatch, input: Omit<Reward.Input, "signal"> | null, timeoutMs: number) => Promise<Outcome>
  readonly close: () => Promise<void>
}

const describeError = (e: unknown): string => (e instanceof Error ? `${e.name}: ${e.message}` : `non-error thrown: ${String(e)}`)

const describeValue = (v: unknown): string =>
  v === null ? "null" : Array.isArray(v) ? "an Array" : typeof v === "object" ? `a ${(v as object).constructor?.name ?? "object"}` : `a ${typeof v}`

/** Checks a reward's return value: a Float32Array of `rows` scores. */
const checkShape = (out: unknown, rows: number): Outcome =>
  !(out instanceof Float32Array)
    ? { _tag: "bad", message: `returned ${describeValue(out)}, not a Float32Array` }
    : out.length !== rows
      ? { _tag: "bad", message: `returned ${out.length} scores for ${rows} rows` }
      : { _tag: "ok", scores: out }

const isThenable = (v: unknown): v is PromiseLike<unknown> =>
  v !== null && (typeof v === "object" || typeof v === "function") && typeof (v as { then?: unknown }).then === "function"

const timeoutMessage = (ms: number) => `did not finish within its timeout of ${ms} ms`

/** Runs `reward` in this thread. Async calls are abandoned at the timeout; sync calls cannot be pre-empted. */
const inProcess = (reward: Reward.Reward): Runner => ({
  call: (batch, decoded, timeoutMs) => {
    const input = decoded ?? inputFromBatch(batch)
    const controller = new AbortController()
    const started = performance.now()
    let result: unknown
    try {
      result = reward.score({ ...input, signal: controller.signal })
    } catch (e) {
      return Promise.resolve({ _tag: "threw", message: describeError(e) })
    }
    if (!isThenable(result)) {
      const took = performance.now() - started
      return Promise.resolve(took > timeoutMs ? { _tag: "timeout", message: `${timeoutMessage(timeoutMs)} (a synchronous call took ${Math.round(took)} ms)` } : checkShape(result, input.rows))
    }
    return new Promise<Outcome>((resolve) => {
      const timer = setTimeout(() => {
        controller.abort(new Error(timeoutMessage(timeoutMs)))
        resolve({ _tag: "timeout", message: timeoutMessage(timeoutMs) })
      }, timeoutMs)
      Promise.resolve(result).then(
        (out) => {
          clearTimeout(timer)
          resolve(checkShape(out, input.rows))
        },
        (e) => {
          clearTimeout(timer)
          resolve({ _tag: "threw", message: describeError(e) })
        }
      )
    })
  },
  close: () => Promise.resolve()
})

/**
 * The worker's program (CommonJS, run with `eval`). It imports the plugin, decodes the config with
 * the plugin's own schema, calls `make`, then scores each batch it is sent as Arrow IPC bytes.
 * `apache-arrow` and `effect` are resolved from the plugin's location (its peer dependencies), else
 * from core's. Its `Input` mirrors `Reward.inputFromBatch`.
 */
const WORKER_SOURCE = String.raw`
const { parentPort, workerData } = require("node:worker_threads")
const { createRequire } = require("node:module")
const { fileURLToPath, pathToFileURL } = require("node:url")
const describe = (e) => (e instanceof Error ? e.name + ": " + e.message : "non-error thrown: " + String(e))
const kind = (v) => (v === null ? "null" : Array.isArray(v) ? "an Array" : typeof v === "object" ? "a " + ((v.constructor && v.constructor.name) || "object") : "a " + typeof v)
let reward, arrow, prefixKey
const strings = (batch, name, nullable) => {
  const v = batch.getChild(name)
  if (v === null) throw new Error('the batch has no "' + name + '" column')
  const out = new Array(v.length)
  for (let i = 0; i < v.length; i++) { const s = v.get(i); out[i] = nullable ? s : (s == null ? "" : s) }
  return out
}
const parseMetadata = (text) => {
  if (text === null || text === "") return {}
  try { const v = JSON.parse(text); return v !== null && typeof v === "object" && !Array.isArray(v) ? v : {} } catch { return {} }
}
const int32List = (vector) => {
  const d = vector.data[0]
  const raw = d.valueOffsets.subarray(0, d.length + 1)
  const base = raw[0]
  const values = d.children[0].values.subarray(base, raw[raw.length - 1])
  return { values, offsets: base === 0 ? raw : raw.map((o) => o - base), rows: d.length }
}
const init = async () => {
  const { pluginSpec, from, hostDir, arrowPath, effectPath, rawConfig } = workerData
  prefixKey = workerData.prefixKey
  // Resolved here, in a thread started without the parent's --conditions, so a test runner's
  // source condition never points the worker at TypeScript it cannot load. A package is looked up
  // where the parent found it (beside core, then the user's directory), whatever the working directory.
  const path = require("node:path")
  let pluginUrl = pluginSpec
  if (pluginSpec.startsWith(".") || pluginSpec.startsWith("/")) pluginUrl = pathToFileURL(path.resolve(from, pluginSpec)).href
  else {
    for (const base of [hostDir, from]) {
      try { pluginUrl = pathToFileURL(createRequire(path.resolve(base, "package.json")).resolve(pluginSpec)).href; break } catch {}
    }
  }
  const plugin = (await import(pluginUrl)).default
  let req = null
  try { req = createRequire(pluginUrl.startsWith("file:") ? fileURLToPath(pluginUrl) : process.cwd() + "/") } catch {}
  const resolve = (spec, fallback) => { try { return req.resolve(spec) } catch { return fallback } }
  arrow = require(resolve("apache-arrow", arrowPath))
  const effect = await import(pathToFileURL(resolve("effect", effectPath)).href)
  const config = effect.Schema.decodeUnknownSync(plugin.config)(rawConfig === undefined ? {} : rawConfig)
  reward = plugin.make(config)
}
const score = async (msg) => {
  const batch = arrow.tableFromIPC(msg.ipc).batches[0]
  const input = {
    rows: batch.numRows,
    prompts: strings(batch, "prompt", false),
    completions: strings(batch, "completion", false),
    completionPrefix: batch.schema.metadata.get(prefixKey) ?? "",
    completionIds: int32List(batch.getChild("completion_ids")),
    answers: strings(batch, "answer", true),
    metadata: strings(batch, "metadata", true).map(parseMetadata),
    finishReasons: strings(batch, "finish_reason", false),
    groupIds: batch.getChild("group_id").data[0].values.subarray(0, batch.numRows),
    batch,
    signal: new AbortController().signal
  }
  return await reward.score(input)
}
parentPort.on("message", (msg) => {
  score(msg).then(
    (out) => {
      if (out instanceof Float32Array) parentPort.postMessage({ type: "result", id: msg.id, scores: out })
      else parentPort.postMessage({ type: "bad", id: msg.id, message: "returned " + kind(out) + ", not a Float32Array" })
    },
    (e) => parentPort.postMessage({ type: "threw", id: msg.id, message: describe(e) })
  )
})
init().then(() => parentPort.postMessage({ type: "ready" }), (e) => parentPort.postMessage({ type: "init-error", message: describe(e) }))
`

const coreRequire = createRequire(import.meta.url)
/** Core's own directory: the parent imports a plugin by name from here first (`Plugin.load`), so the worker does too. */
const hostDir = path.dirname(fileURLToPath(import.meta.url))

/** The batch as IPC stream bytes (one copy, then transferred to the worker without another). */
const toIpc = (batch: RecordBatch): Uint8Array => tableToIPC(new Table(batch), "stream")

/**
 * The parent's Node flags minus those that would break the worker: `--conditions` (a test runner's
 * source condition must not point it at TypeScript) and `--input-type` (its source is CommonJS).
 */
const workerExecArgv = (): Array<string> => {
  const out: Array<string> = []
  const args = process.execArgv
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--conditions" || args[i] === "-C" || args[i] === "--input-type") i++
    else if (!args[i].startsWith("--conditions=") && !args[i].startsWith("--input-type=")) out.push(args[i])
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// A worker's memory

const MB = 1 << 20
const STATUS = "/proc/self/status"
const hasStatus = existsSync(STATUS)

const VM_RSS = /VmRSS:\s+(\d+) kB/
const VM_DATA = /VmData:\s+(\d+) kB/
const statusKb = (text: string, line: RegExp): number => Number(line.exec(text)?.[1] ?? 0) * 1024

/**
 * This process's memory in bytes, all threads together: resident, and reserved for data (Linux
 * `VmData`: private writable memory, counted when allocated, touched or not; a zero-filled
 * `Buffer.alloc` is not resident until written). Elsewhere both are the resident set size.
 */
const processMemory = (): { readonly resident: number; readonly reserved: number } => {
  if (!hasStatus) {
    const rss = process.memoryUsage.rss()
    return { resident: rss, reserved: rss }
  }
  const text = readFileSync(STATUS, "latin1")
  return { resident: statusKb(text, VM_RSS), reserved: statusKb(text, VM_DATA) }
}

/** This thread's own JS heap and buffers (what the trainer itself allocates meanwhile is not the worker's). */
const ownMemory = (): number => {
  const m = process.memoryUsage()
  return m.heapTotal + m.external
}

/**
 * Watches the process while one worker call runs and calls `exceeded` (once, with the growth in MB)
 * when the memory gained since the call began passes `limitMb`: the larger of the resident and the
 * reserved growth, less this thread's own. The trainer waits for the call, so what grows is the
 * worker, ArrayBuffers and other memory outside V8's heap limit included. Sampled every 10 ms: a
 * reward hoarding memory at a GB per second overshoots by tens of MB, not gigabytes. Returns `stop`.
 */
const watchMemory = (limitMb: number, exceeded: (grewMb: number) => void): (() => void) => {
  const start = processMemory()
  const own = ownMemory()
  const timer = setInterval(() => {
    const now = processMemory()
    const grew = Math.max(now.resident - start.resident, now.reserved - start.reserved) - Math.max(0, ownMemory() - own)
    if (grew <= limitMb * MB) return
    clearInterval(timer)
    exceeded(Math.round(grew / MB))
  }, 10)
  timer.unref()
  return () => clearInterval(timer)
}

/**
 * Runs a plugin's reward in a worker thread whose memory is bounded by `memoryMb`: V8 caps its heap
 * there, and the parent stops it when the process grows by more than that during a call (see
 * `watchMemory`: a reward's buffers live outside the heap). Started by `start()`
 * (which fails with the worker's init error); after a timeout, a crash or running out of memory the
 * worker is gone and a new one starts on the next call.
 */
const inWorker = (plugin: { readonly spec: string; readonly from: string }, rawConfig: unknown, label: string, memoryMb: number) => {
  let worker: Worker | null = null
  let starting: Promise<Worker> | null = null
  let nextId = 0
  const pending = new Map<number, (o: Outcome) => void>()

  const failAll = (outcome: Outcome) => {
    for (const resolve of pending.values()) resolve(outcome)
    pending.clear()
  }

  const spawn = (): Promise<Worker> =>
    new Promise<Worker>((resolve, reject) => {
      const w = new Worker(WORKER_SOURCE, {
        eval: true,
        execArgv: workerExecArgv(),
        // Exhausting it ends only this worker (ERR_WORKER_OUT_OF_MEMORY), never the trainer.
        resourceLimits: { maxOldGenerationSizeMb: memoryMb },
        workerData: { pluginSpec: plugin.spec, from: plugin.from, hostDir, rawConfig, arrowPath: coreRequire.resolve("apache-arrow"), effectPath: coreRequire.resolve("effect"), prefixKey: Batch.COMPLETION_PREFIX_KEY }
      })
      w.unref()
      let ready = false
      w.on("message", (msg: { type: string; id?: number; scores?: Float32Array; message?: string }) => {
        if (msg.type === "ready") {
          ready = true
          resolve(w)
        } else if (msg.type === "init-error") {
          reject(new Error(msg.message))
          void w.terminate()
        } else {
          const done = pending.get(msg.id!)
          pending.delete(msg.id!)
          if (done === undefined) return
          if (msg.type === "result") done({ _tag: "ok", scores: msg.scores! })
          else done({ _tag: msg.type === "bad" ? "bad" : "threw", message: msg.message! })
        }
      })
      w.on("error", (e: NodeJS.ErrnoException) => {
        // A dead worker must not serve the next call, even one made before its "exit" arrives.
        if (worker === w) worker = null
        if (!ready) reject(e)
        else if (e.code === "ERR_WORKER_OUT_OF_MEMORY") failAll({ _tag: "oom", message: `ran out of memory (its worker's heap limit is ${memoryMb} MB); the worker was stopped and will restart` })
        else failAll({ _tag: "threw", message: `the worker crashed: ${describeError(e)}` })
      })
      w.on("exit", (code) => {
        if (worker === w) worker = null
        if (!ready) reject(new Error(`the worker exited with code ${code} while loading ${label}`))
        else failAll({ _tag: "threw", message: `the worker exited with code ${code} during the call` })
      })
    })

  const start = (): Promise<Worker> => {
    if (worker !== null) return Promise.resolve(worker)
    if (starting === null) {
      starting = spawn().then(
        (w) => {
          worker = w
          starting = null
          return w
        },
        (e) => {
          starting = null
          throw e
        }
      )
    }
    return starting
  }

  const call = async (batch: RecordBatch, _input: unknown, timeoutMs: number): Promise<Outcome> => {
    let w: Worker
    try {
      w = await start()
    } catch (e) {
      return { _tag: "threw", message: `could not start its worker: ${(e as Error).message}` }
    }
    const ipc = toIpc(batch)
    const id = nextId++
    return new Promise<Outcome>((resolve) => {
      // Ends the call with `outcome` and the worker with it (a call past its timeout or its memory).
      const abandon = (outcome: Outcome) => {
        pending.delete(id)
        clearTimeout(timer)
        stopWatch()
        resolve(outcome)
        if (worker === w) worker = null
        void w.terminate()
      }
      const timer = setTimeout(() => abandon({ _tag: "timeout", message: `${timeoutMessage(timeoutMs)} (its worker was terminated and will restart)` }), timeoutMs)
      const stopWatch = watchMemory(memoryMb, (grewMb) =>
        abandon({
          _tag: "oom",
          message: `ran out of memory (its worker's limit is ${memoryMb} MB: the process grew by ${grewMb} MB during the call, buffers outside the JS heap included); the worker was stopped and will restart`
        })
      )
      pending.set(id, (o) => {
        clearTimeout(timer)
        stopWatch()
        resolve(o._tag === "ok" ? checkShape(o.scores, batch.numRows) : o)
      })
      const whole = ipc.byteOffset === 0 && ipc.byteLength === ipc.buffer.byteLength
      w.postMessage({ type: "score", id, ipc }, whole ? [ipc.buffer as ArrayBuffer] : [])
    })
  }

  const close = async () => {
    const w = worker
    worker = null
    failAll({ _tag: "threw", message: "the reward stage was closed" })
    if (w !== null) await w.terminate()
  }

  return { start, runner: { call, close } satisfies Runner }
}

// ---------------------------------------------------------------------------------------------
// The stage

interface Slot {
  readonly label: string
  readonly column: string
  readonly weight: number
  readonly onError: OnError
  readonly timeoutMs: number
  readonly runner: Runner
}

const STAGE = "rewards"

const rowIds = (batch: RecordBatch): ((i: number) => string) => {
  const ids = batch.getChild("id") as Vector<Utf8> | null
  return (i) => JSON.stringify(ids?.get(i) ?? String(i))
}

const fromSlots = (slots: ReadonlyArray<Slot>): RewardStage => {
  const names = slots.map((s) => s.column)
  const seen = new Set<string>()
  for (const n of names) {
    if (seen.has(n)) throw new Error(`two rewards write the column "${Batch.rewardColumn(n)}"; give one of them another name`)
    seen.add(n)
  }
  const counters: Record<string, { calls: number; rows: number; last: string | null }> = Object.fromEntries(names.map((n) => [n, { calls: 0, rows: 0, last: null }]))
  const output = Batch.scoredWith(names) as unknown as ArrowSchema<ScoredType>

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

  const scoreOne = (slot: Slot, batch: RecordBatch, input: Omit<Reward.Input, "signal">): Effect.Effect<Float32Array, Stage.StageError> =>
    Effect.gen(function*() {
      const rows = batch.numRows
      const id = rowIds(batch)
      const outcome = yield* Effect.promise(() => slot.runner.call(batch, input, slot.timeoutMs))
      let failed: Array<number> = []
      let message: string
      let scores: Float32Array
      if (outcome._tag === "ok") {
        // A copy: the reward may reuse its buffer, and the column must not change under us.
        scores = outcome.scores.slice()
        for (let i = 0; i < rows; i++) if (scores[i] === Infinity || scores[i] === -Infinity) failed.push(i)
        if (failed.length === 0) return scores
        message = `returned ${scores[failed[0]]} for row ${failed[0]} (id ${id(failed[0])})${failed.length > 1 ? ` and ${failed.length - 1} more rows` : ""}; scores must be finite or NaN`
      } else {
        scores = new Float32Array(rows)
        failed = Array.from({ length: rows }, (_, i) => i)
        message = outcome.message
        if (slot.onError === "fail" && outcome._tag === "threw") {
          const row = yield* Effect.promise(() => findRow(slot, batch))
          message += row === null ? ` (on the batch of ${rows} rows; no single row reproduces it)` : ` (row ${row}, id ${id(row)}, throws on its own)`
        } else if (rows > 0) {
          message += ` (on the batch of ${rows} rows, ids ${id(0)}…${id(rows - 1)})`
        }
      }
      const text = `reward "${slot.column}" (${slot.label}): ${message}`
      if (slot.onError === "fail") return yield* new Stage.StageError({ stage: STAGE, message: text })
      for (const i of failed) scores[i] = NaN
      const c = counters[slot.column]
      c.calls += 1
      c.rows += failed.length
      c.last = text
      yield* Effect.logWarning(`${text}; ${failed.length} row(s) scored NaN (onError: "nan")`)
      return scores
    })

  return {
    ...Stage.make({
      name: STAGE,
      input: Batch.Rollouts,
      output,
      transform: (batch) =>
        Effect.gen(function*() {
          const rows = batch.numRows
          const columns: Record<string, Vector> = {}
          const total = new Float32Array(rows).fill(NaN)
          let current: RecordBatch = batch
          const decoded = inputFromBatch(batch)
          for (const slot of slots) {
            const scores = rows === 0 ? new Float32Array(0) : yield* scoreOne(slot, current, { ...decoded, batch: current })
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
    }),
    names,
    failures: () => Object.fromEntries(names.map((n) => [n, { ...counters[n] }])),
    metrics: (scored) => {
      const m = metrics(scored, names)
      for (const n of names) {
        m[`rewards/${n}/failed_calls`] = counters[n].calls
        m[`rewards/${n}/failed_rows`] = counters[n].rows
      }
      return m
    },
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
      runner: inProcess(e.reward)
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
        return yield* new Plugin.PluginError({ plugin: entry.plugin, message: `make(config) returned ${describeValue(reward)}, not a reward with a score function` })
      }
      const column = entry.name ?? plugin.name
      const clash = columnTaken(taken, column, i, "")
      if (clash !== null) {
        yield* stopAll
        return yield* clash
      }
      const label = `rewards[${i}] ${plugin.name}@${plugin.version}`
      let runner: Runner = inProcess({ name: plugin.name, version: plugin.version, score: (input) => reward.score(input) })
      if (options.isolation !== "in-process") {
        const w = inWorker({ spec: entry.plugin, from }, entry.config, label, options.memoryMb ?? DEFAULT_WORKER_MEMORY_MB)
        starts.push({ spec: entry.plugin, start: w.start })
        runner = w.runner
      }
      slots.push({ label, column, weight: entry.weight, onError: entry.onError, timeoutMs: entry.timeoutMs, runner })
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

// ---------------------------------------------------------------------------------------------
// Metrics

const moments = (values: Float32Array): { mean: number; std: number; finite: number } => {
  let n = 0, sum = 0
  for (const v of values) if (v === v) { n++; sum += v }
  const mean = n > 0 ? sum / n : NaN
  let sq = 0
  for (const v of values) if (v === v) sq += (v - mean) ** 2
  return { mean, std: n > 0 ? Math.sqrt(sq / n) : NaN, finite: n }
}

/**
 * Step metrics of a scored batch: per reward `rewards/<name>/mean`, `/std` (population, over the
 * non-NaN rows; absent when all rows are NaN) and `/frac_nan`; for the total `reward`, `reward_std`,
 * `reward_frac_nan` (rows that get advantage 0), and `frac_reward_zero_std`: the fraction of groups
 * (by `group_id`) whose non-NaN totals are all equal (or number fewer than two), which carry no
 * learning signal under GRPO.
 */
export const metrics = (scored: RecordBatch, names: ReadonlyArray<string>): Record<string, number> => {
  const rows = scored.numRows
  const out: Record<string, number> = {}
  const put = (values: Float32Array, keys: { mean: string; std: string; nan: string }) => {
    const m = moments(values)
    if (m.finite > 0) {
      out[keys.mean] = m.mean
      out[keys.std] = m.std
    }
    out[keys.nan] = rows === 0 ? 0 : (rows - m.finite) / rows
  }
  for (const n of names) {
    const col = scored.getChild(Batch.rewardColumn(n)) as Vector<Float32> | null
    if (col === null) throw new Error(`the batch has no column "${Batch.rewardColumn(n)}"`)
    put(Columns.float32Values(col), { mean: `rewards/${n}/mean`, std: `rewards/${n}/std`, nan: `rewards/${n}/frac_nan` })
  }
  const total = Columns.float32Values(scored.getChild("reward") as Vector<Float32>)
  put(total, { mean: "reward", std: "reward_std", nan: "reward_frac_nan" })
  const groups = Columns.int32Values(scored.getChild("group_id") as any)
  const lo = new Map<number, number>(), hi = new Map<number, number>(), count = new Map<number, number>()
  for (let i = 0; i < rows; i++) {
    const g = groups[i]
    if (!count.has(g)) count.set(g, 0)
    const v = total[i]
    if (v !== v) continue
    count.set(g, count.get(g)! + 1)
    lo.set(g, Math.min(lo.get(g) ?? Infinity, v))
    hi.set(g, Math.max(hi.get(g) ?? -Infinity, v))
  }
  let zero = 0
  for (const [g, c] of count) if (c < 2 || lo.get(g) === hi.get(g)) zero++
  out.frac_reward_zero_std = count.size === 0 ? 0 : zero / count.size
  return out
}
