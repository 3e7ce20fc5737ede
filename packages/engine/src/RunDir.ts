/**
 * The run directory: everything a run produced, laid out so that a crash loses nothing already written.
 *
 *   runs/<name>-<timestamp>/
 *     manifest.json          resolved config verbatim, seed, versions, backend, git commit, machine
 *     metrics.jsonl          per-step scalars, append-only (torn tail truncated on reopen)
 *     rollouts/step-NNNNNN.parquet every prompt, completion, reward and advantage of a step
 *     evals/<name>.json      evaluation results (accuracy, format rate, length) with samples
 *     evals/standalone/      results of `r1flow eval` of the run, one file each (never the trainer's files)
 *     checkpoints/           step-N/ directories and a `latest` pointer
 *     report.html            the self-contained report
 *     run.lock               the one process writing here (see RunLock)
 *
 * Every file is written to a temporary name, fsynced and renamed, so readers see whole files only.
 */
import { execFileSync } from "node:child_process"
import { createHash } from "node:crypto"
import { closeSync, existsSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, readSync, renameSync, rmSync, writeSync } from "node:fs"
import { cpus, totalmem } from "node:os"
import { join } from "node:path"
import { Metrics } from "@r1flow/core"
import { RecordBatch, Table, tableToIPC } from "apache-arrow"
import { Effect, Schema, type Scope } from "effect"
import { Table as WasmTable, writeParquet } from "parquet-wasm"

/** A file of the run directory could not be written or read. */
export class RunDirError extends Schema.TaggedError<RunDirError>()("RunDirError", {
  path: Schema.String,
  message: Schema.String
}) {}

/** Paths of one run directory. */
export interface RunDir {
  readonly root: string
  readonly manifest: string
  readonly metrics: string
  readonly rollouts: string
  readonly evals: string
  readonly checkpoints: string
  readonly report: string
  readonly lock: string
}

/** The paths of the run directory at `root` (nothing is created). */
export const at = (root: string): RunDir => ({
  root,
  manifest: join(root, "manifest.json"),
  metrics: join(root, "metrics.jsonl"),
  rollouts: join(root, "rollouts"),
  evals: join(root, "evals"),
  checkpoints: join(root, "checkpoints"),
  report: join(root, "report.html"),
  lock: join(root, "run.lock")
})

/** A time as it appears in file names: `20260102-030405Z`. */
export const stamp = (d: Date) => d.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z").replace("T", "-")

/** `path`, or `path-2`, `path-3`…: the first that `make` creates without finding it there (EEXIST). */
const claimName = (path: string, suffix: string, make: (candidate: string) => void): string => {
  for (let n = 1; n < 10_000; n++) {
    const candidate = n === 1 ? `${path}${suffix}` : `${path}-${n}${suffix}`
    try {
      make(candidate)
      return candidate
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e
    }
  }
  throw new Error(`${path}${suffix}: 10,000 names taken`)
}

/**
 * Creates `runs/<name>-<timestamp>/` (and its subfolders) under `base`. The folder is created
 * exclusively: a run started in the same second as another gets `<name>-<timestamp>-2`, never the other's.
 */
export const create = (base: string, name: string, now: Date = new Date()): Effect.Effect<RunDir, RunDirError> =>
  Effect.try({
    try: () => {
      mkdirSync(base, { recursive: true })
      const dir = at(claimName(join(base, `${name}-${stamp(now)}`), "", (p) => mkdirSync(p)))
      for (const d of [dir.rollouts, dir.evals, dir.checkpoints]) mkdirSync(d)
      return dir
    },
    catch: (e) => new RunDirError({ path: base, message: `cannot create the run directory: ${(e as Error).message}` })
  })

/** Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync of the folder. */
export const writeAtomic = (path: string, bytes: Uint8Array | string): void => {
  const tmp = `${path}.tmp-${process.pid}`
  const fd = openSync(tmp, "w")
  try {
    const buf = typeof bytes === "string" ? Buffer.from(bytes, "utf8") : bytes
    let off = 0
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  renameSync(tmp, path)
  fsyncDir(join(path, ".."))
}

/**
 * Writes `bytes` under a name no other file has: `<stem><ext>`, else `<stem>-2<ext>`…, made whole
 * (temp file, fsync, hard link, which fails on an existing name). Returns the path written.
 */
export const writeNew = (stem: string, ext: string, bytes: Uint8Array | string): string => {
  const tmp = `${stem}${ext}.tmp-${process.pid}`
  writeAtomic(tmp, bytes)
  try {
    return claimName(stem, ext, (p) => linkSync(tmp, p))
  } finally {
    rmSync(tmp, { force: true })
    fsyncDir(join(stem, ".."))
  }
}

/** fsyncs a directory so a rename inside it is durable. */
export const fsyncDir = (dir: string): void => {
  const fd = openSync(dir, "r")
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

/** sha256 of a file, read in 64 MiB pieces: checkpoints hold files past Node's 2 GiB limit of one read. */
export const sha256File = (path: string): string => {
  const hash = createHash("sha256"), buffer = Buffer.allocUnsafe(64 * 2 ** 20), fd = openSync(path, "r")
  try {
    for (let n; (n = readSync(fd, buffer, 0, buffer.length, null)) > 0;) hash.update(buffer.subarray(0, n))
  } finally {
    closeSync(fd)
  }
  return hash.digest("hex")
}

/** `writeAtomic` as an Effect. */
export const write = (path: string, bytes: Uint8Array | string): Effect.Effect<void, RunDirError> =>
  Effect.try({ try: () => writeAtomic(path, bytes), catch: (e) => new RunDirError({ path, message: (e as Error).message }) })

/** A record batch as the bytes of an Arrow IPC file. */
export const ipcFile = (batch: RecordBatch): Uint8Array => tableToIPC(new Table(batch), "file")

/** A record batch as the bytes of a Parquet file (through parquet-wasm; opens in DuckDB, pandas, Spark…). */
export const parquetFile = (batch: RecordBatch): Uint8Array => {
  // writeParquet takes ownership of the wasm table and frees it.
  return writeParquet(WasmTable.fromIPCStream(tableToIPC(new Table(batch), "stream")))
}

/** Writes a step's rollouts (prompts, completions, every reward, advantages) as `rollouts/step-NNNNNN.parquet`. */
export const writeRollouts = (dir: RunDir, step: number, batch: RecordBatch): Effect.Effect<string, RunDirError> => {
  const path = join(dir.rollouts, `step-${String(step).padStart(6, "0")}.parquet`)
  return Effect.flatMap(
    Effect.try({ try: () => parquetFile(batch), catch: (e) => new RunDirError({ path, message: `cannot encode Parquet: ${(e as Error).message}` }) }),
    (bytes) => Effect.as(write(path, bytes), path)
  )
}

const tryText = (cmd: string, args: Array<string>): string | null => {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim()
  } catch {
    return null
  }
}

/** What the manifest records about where and with what a run ran. */
export const environment = (packageVersions: Record<string, string>) => ({
  node: process.version,
  platform: `${process.platform}-${process.arch}`,
  cpu: cpus()[0]?.model ?? "unknown",
  cpuCount: cpus().length,
  memoryGiB: Math.round(totalmem() / 2 ** 30),
  gpu: tryText("nvidia-smi", ["--query-gpu=name", "--format=csv,noheader"]),
  gitCommit: tryText("git", ["rev-parse", "HEAD"]),
  versions: packageVersions
})

/** Reads the installed version of each package (for the manifest). */
export const versionsOf = (names: ReadonlyArray<string>, require: (id: string) => unknown): Record<string, string> =>
  Object.fromEntries(
    names.map((n) => {
      try {
        return [n, (require(`${n}/package.json`) as { version: string }).version]
      } catch {
        return [n, "unknown"]
      }
    })
  )

/** Reads and parses a JSON file of the run. */
export const readJson = (path: string): Effect.Effect<unknown, RunDirError> =>
  Effect.try({
    try: () => JSON.parse(readFileSync(path, "utf8")) as unknown,
    catch: (e) => new RunDirError({ path, message: existsSync(path) ? `${path}: not valid JSON: ${(e as Error).message}` : `${path} is missing` })
  })

const metricsError = (path: string) => (e: unknown) =>
  e instanceof Metrics.MetricsFileError ? e : new RunDirError({ path, message: (e as Error).message })

/** Reads a metrics JSONL file of the run; a bad line before the last is a `MetricsFileError` naming it. */
export const readMetrics = (path: string): Effect.Effect<ReturnType<typeof Metrics.readJsonl>, Metrics.MetricsFileError | RunDirError> =>
  Effect.try({ try: () => Metrics.readJsonl(path), catch: metricsError(path) })

/** Opens a metrics JSONL sink (closed with the scope); a damaged file is refused, never cut. */
export const metricsSink = (path: string): Effect.Effect<Metrics.Sink, Metrics.MetricsFileError | RunDirError, Scope.Scope> =>
  Effect.acquireRelease(Effect.try({ try: () => Metrics.jsonlSink(path), catch: metricsError(path) }), (s) => Effect.sync(() => s.close()))
