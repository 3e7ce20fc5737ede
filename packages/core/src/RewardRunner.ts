/**
 * How the reward stage runs one reward on one batch: in this thread (`inProcess`) or in a worker
 * thread of its own (`inWorker`, whose program is `RewardWorker.ts`). A runner never throws: every way
 * a call can end is an `Outcome`, and the stage's failure policy (`RewardStage`) decides what it means.
 *
 * A worker's memory is bounded twice: its JS heap by V8 (`resourceLimits`), and all of it, buffers
 * outside the heap included, by this thread, which samples the process while a call runs and stops
 * the worker when the process has grown past the limit (`watchMemory`).
 */
import { existsSync, readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { fileURLToPath, pathToFileURL } from "node:url"
import { Worker } from "node:worker_threads"
import { Table, tableToIPC, type RecordBatch } from "apache-arrow"
import * as Reward from "./Reward.js"

/** How one call ended. */
export type Outcome =
  | { readonly _tag: "ok"; readonly scores: Float32Array }
  | { readonly _tag: "threw"; readonly message: string }
  | { readonly _tag: "bad"; readonly message: string }
  | { readonly _tag: "timeout"; readonly message: string }
  | { readonly _tag: "oom"; readonly message: string }

/** Runs a reward on a batch, never throwing; `input` is the batch already decoded (`null`: decode it if needed). */
export interface Runner {
  readonly call: (batch: RecordBatch, input: Omit<Reward.Input, "signal"> | null, timeoutMs: number) => Promise<Outcome>
  readonly close: () => Promise<void>
}

/** A thrown value as one line: `Name: message`, and anything thrown that is not an Error said as such. */
export const describeError = (e: unknown): string => (e instanceof Error ? `${e.name}: ${e.message}` : `non-error thrown: ${String(e)}`)

/** What a value is, for a message about a wrong return value (`an Array`, `a Promise`, `null`). */
export const describeValue = (v: unknown): string =>
  v === null ? "null" : Array.isArray(v) ? "an Array" : typeof v === "object" ? `a ${(v as object).constructor?.name ?? "object"}` : `a ${typeof v}`

/** Checks a reward's return value: a Float32Array of `rows` scores (checked in the thread that called it). */
export const checkShape = (out: unknown, rows: number): Outcome =>
  !(out instanceof Float32Array)
    ? { _tag: "bad", message: `returned ${describeValue(out)}, not a Float32Array` }
    : out.length !== rows
      ? { _tag: "bad", message: `returned ${out.length} scores for ${rows} rows` }
      : { _tag: "ok", scores: out }

const isThenable = (v: unknown): v is PromiseLike<unknown> =>
  v !== null && (typeof v === "object" || typeof v === "function") && typeof (v as { then?: unknown }).then === "function"

const timeoutMessage = (ms: number) => `did not finish within its timeout of ${ms} ms`

/** Runs `reward` in this thread. Async calls are abandoned at the timeout; sync calls cannot be pre-empted. */
export const inProcess = (reward: Reward.Reward): Runner => ({
  call: (batch, decoded, timeoutMs) => {
    const input = decoded ?? Reward.inputFromBatch(batch)
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

// ---------------------------------------------------------------------------------------------
// The worker's protocol (`RewardWorker.ts` is the other side)

/** What a reward's worker starts from: it loads the plugin itself, as the parent did. */
export interface WorkerData {
  /** Package name or path, as configured. */
  readonly spec: string
  /** Where a path or a package resolves (`RewardStage.LoadOptions.from`). */
  readonly from: string
  /** The plugin's raw `config` section, decoded in the worker by the plugin's own schema. */
  readonly rawConfig: unknown
  /** The section's place in the config, for messages (`rewards[0].config`). */
  readonly where: string
}

/** The one request: score this batch, sent as Arrow IPC stream bytes. */
export interface Request {
  readonly id: number
  readonly ipc: Uint8Array
}

/** What the worker says: once `ready` (or why it could not load), then one reply per request. */
export type Reply =
  | { readonly type: "ready" }
  | { readonly type: "init-error"; readonly message: string }
  | { readonly type: "result"; readonly id: number; readonly scores: Float32Array }
  | { readonly type: "bad" | "threw"; readonly id: number; readonly message: string }

const WORKER_FILE = "RewardWorker.js"
const coreRequire = createRequire(import.meta.url)

/**
 * The worker's program: the built file beside this module (under `dist/`, as the CLI and any other
 * built package runs). When this module runs from core's TypeScript sources (a test runner, or a bundle
 * of them) there is no JavaScript beside it, and a worker thread cannot load TypeScript, so it is the
 * package's built `dist/` file: core's test target builds it first (`vitest.config.mjs`, and the Nx
 * target's `dependsOn`), the other packages' tests through `^build`. Looked up per start, not at import.
 */
const workerFile = (): URL => {
  const beside = new URL(`./${WORKER_FILE}`, import.meta.url)
  if (existsSync(beside)) return beside
  const built = new URL(`dist/${WORKER_FILE}`, pathToFileURL(coreRequire.resolve("@r1flow/core/package.json")))
  if (existsSync(built)) return built
  throw new Error(`its program ${fileURLToPath(built)} is missing; build @r1flow/core first (npx nx run @r1flow/core:build)`)
}

/**
 * The parent's Node flags minus those that would mislead the worker: `--conditions` (a test runner's
 * source condition would point it, and the plugins it imports, at TypeScript) and `--input-type`
 * (meant for the parent's own evaluated code).
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

// ---------------------------------------------------------------------------------------------
// The worker runner

/** What `inWorker` runs: the plugin to load in the worker, how it is named in messages, its memory limit. */
export interface WorkerOptions {
  readonly data: WorkerData
  /** `rewards[i] name@version`, for messages. */
  readonly label: string
  readonly memoryMb: number
}

/** A worker runner, and `start`, which fails with the worker's load error (so `load` can fail early). */
export interface WorkerRunner {
  readonly start: () => Promise<unknown>
  readonly runner: Runner
}

/** One reward's worker: the live thread (`null` once gone), the one being started, the calls waiting on it. */
interface State {
  worker: Worker | null
  starting: Promise<Worker> | null
  nextId: number
  readonly pending: Map<number, (o: Outcome) => void>
}

const failAll = (state: State, outcome: Outcome) => {
  for (const resolve of state.pending.values()) resolve(outcome)
  state.pending.clear()
}

/** Settles the call a reply answers; one abandoned meanwhile (timeout, memory) is no longer waiting. */
const settle = (state: State, reply: Extract<Reply, { id: number }>) => {
  const done = state.pending.get(reply.id)
  state.pending.delete(reply.id)
  if (done === undefined) return
  done(reply.type === "result" ? { _tag: "ok", scores: reply.scores } : { _tag: reply.type, message: reply.message })
}

/** Starts a worker and resolves once it has loaded its plugin; rejects with why it could not. */
const spawn = (options: WorkerOptions, state: State): Promise<Worker> =>
  new Promise<Worker>((resolve, reject) => {
    const w = new Worker(workerFile(), {
      execArgv: workerExecArgv(),
      // Exhausting it ends only this worker (ERR_WORKER_OUT_OF_MEMORY), never the trainer.
      resourceLimits: { maxOldGenerationSizeMb: options.memoryMb },
      workerData: options.data
    })
    w.unref()
    let ready = false
    w.on("message", (reply: Reply) => {
      if (reply.type === "ready") {
        ready = true
        resolve(w)
      } else if (reply.type === "init-error") {
        reject(new Error(reply.message))
        void w.terminate()
      } else settle(state, reply)
    })
    w.on("error", (e: NodeJS.ErrnoException) => {
      // A dead worker must not serve the next call, even one made before its "exit" arrives.
      if (state.worker === w) state.worker = null
      if (!ready) reject(e)
      else if (e.code === "ERR_WORKER_OUT_OF_MEMORY") failAll(state, { _tag: "oom", message: `ran out of memory (its worker's heap limit is ${options.memoryMb} MB); the worker was stopped and will restart` })
      else failAll(state, { _tag: "threw", message: `the worker crashed: ${describeError(e)}` })
    })
    w.on("exit", (code) => {
      if (state.worker === w) state.worker = null
      if (!ready) reject(new Error(`the worker exited with code ${code} while loading ${options.label}`))
      else failAll(state, { _tag: "threw", message: `the worker exited with code ${code} during the call` })
    })
  })

/** The live worker, or the one being started (concurrent callers share one start). */
const start = (options: WorkerOptions, state: State): Promise<Worker> => {
  if (state.worker !== null) return Promise.resolve(state.worker)
  if (state.starting === null) {
    state.starting = spawn(options, state).then(
      (w) => {
        state.worker = w
        state.starting = null
        return w
      },
      (e) => {
        state.starting = null
        throw e
      }
    )
  }
  return state.starting
}

/** Sends one batch, and ends the call (and the worker with it) at the timeout or the memory limit. */
const send = (options: WorkerOptions, state: State, w: Worker, batch: RecordBatch, timeoutMs: number): Promise<Outcome> => {
  // The batch as IPC stream bytes: one copy here, then transferred without another.
  const ipc = tableToIPC(new Table(batch), "stream")
  const id = state.nextId++
  return new Promise<Outcome>((resolve) => {
    const abandon = (outcome: Outcome) => {
      state.pending.delete(id)
      clearTimeout(timer)
      stopWatch()
      resolve(outcome)
      if (state.worker === w) state.worker = null
      void w.terminate()
    }
    const timer = setTimeout(() => abandon({ _tag: "timeout", message: `${timeoutMessage(timeoutMs)} (its worker was terminated and will restart)` }), timeoutMs)
    const stopWatch = watchMemory(options.memoryMb, (grewMb) =>
      abandon({
        _tag: "oom",
        message: `ran out of memory (its worker's limit is ${options.memoryMb} MB: the process grew by ${grewMb} MB during the call, buffers outside the JS heap included); the worker was stopped and will restart`
      })
    )
    state.pending.set(id, (o) => {
      clearTimeout(timer)
      stopWatch()
      resolve(o)
    })
    const whole = ipc.byteOffset === 0 && ipc.byteLength === ipc.buffer.byteLength
    w.postMessage({ id, ipc } satisfies Request, whole ? [ipc.buffer as ArrayBuffer] : [])
  })
}

/**
 * Runs a plugin's reward in a worker thread whose memory is bounded by `memoryMb` (see the module
 * doc). After a timeout, a crash or running out of memory the worker is gone, and a new one starts on
 * the next call.
 */
export const inWorker = (options: WorkerOptions): WorkerRunner => {
  const state: State = { worker: null, starting: null, nextId: 0, pending: new Map() }
  const call = async (batch: RecordBatch, _input: unknown, timeoutMs: number): Promise<Outcome> => {
    const w = await start(options, state).catch((e: Error) => e)
    if (w instanceof Error) return { _tag: "threw", message: `could not start its worker: ${w.message}` }
    return send(options, state, w, batch, timeoutMs)
  }
  const close = async () => {
    const w = state.worker
    state.worker = null
    failAll(state, { _tag: "threw", message: "the reward stage was closed" })
    if (w !== null) await w.terminate()
  }
  return { start: () => start(options, state), runner: { call, close } }
}
