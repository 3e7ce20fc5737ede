/**
 * Per-step scalar metrics. Stages report named numbers for a step; sinks write them out.
 *
 * The JSONL sink is append-only and crash-safe: each record is one line written with a single
 * `write` and fsynced; on open, a torn last line (a crash mid-write) is truncated away, so the file
 * always holds whole records and a resumed run appends after the last good one. A bad line before
 * the last is not a crash mid-write but damage: it is an error, and nothing is truncated.
 */
import { closeSync, existsSync, fsyncSync, ftruncateSync, openSync, readFileSync, writeSync } from "node:fs"
import { Context, Effect, Layer, Schema } from "effect"

/** One step's metrics. */
export interface Entry {
  readonly step: number
  readonly values: Readonly<Record<string, number>>
}

/** Where metrics go. */
export interface Sink {
  readonly write: (entry: Entry) => void
  readonly close: () => void
}

/** The metrics service stages report to. */
export class Metrics extends Context.Service<Metrics, {
  /** Records `values` for `step` (merged with anything already recorded for that step). */
  record(step: number, values: Readonly<Record<string, number>>): Effect.Effect<void>
  /** Every entry written so far, oldest first. */
  history(): ReadonlyArray<Entry>
}>()("@r1flow/core/Metrics") {}

const fmt = (v: number) => (Number.isInteger(v) ? String(v) : Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(2) : v.toFixed(4))

/** Prints one line per step with the chosen keys (all keys when none are given). */
export const consoleSink = (keys?: ReadonlyArray<string>, log: (line: string) => void = console.log): Sink => ({
  write: (e) => {
    const shown = keys ?? Object.keys(e.values)
    log(`step ${e.step}  ${shown.filter((k) => k in e.values).map((k) => `${k}=${fmt(e.values[k])}`).join("  ")}`)
  },
  close: () => {}
})

/**
 * A metrics file has a bad line before its last one. A crash mid-write can only tear the last line, so
 * this is damage (another writer, a disk fault): nothing after it may be dropped.
 */
export class MetricsFileError extends Schema.TaggedError<MetricsFileError>()("MetricsFileError", {
  path: Schema.String,
  line: Schema.Number,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.path}:${this.line}: ${this.reason}; only a torn last line may be dropped, so the file was left as it is (repair or remove that line)`
  }
}

/** One line as a metrics record, or why it is not one. */
const parseLine = (line: string): Entry | string => {
  let parsed: unknown
  try {
    parsed = JSON.parse(line)
  } catch (e) {
    return `not JSON (${(e as Error).message})`
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed) || typeof (parsed as { step?: unknown }).step !== "number") {
    return "not a metrics record ({ \"step\": n, … })"
  }
  const { step, ...values } = parsed as { step: number } & Record<string, number>
  return { step, values }
}

/**
 * Reads a metrics JSONL file, dropping a torn last line: bytes after the last newline, or a final line
 * that does not parse. Returns the entries and the byte length of the whole-record prefix (what
 * `jsonlSink` truncates the file to). Throws `MetricsFileError` (file and line) for a bad line before the last.
 */
export const readJsonl = (path: string): { entries: Array<Entry>; validBytes: number } => {
  if (!existsSync(path)) return { entries: [], validBytes: 0 }
  const buf = readFileSync(path)
  const entries: Array<Entry> = []
  let start = 0
  let valid = 0
  let line = 0
  for (let i = 0; i < buf.length; i++) {
    if (buf[i] !== 0x0a) continue
    line++
    const entry = parseLine(buf.subarray(start, i).toString("utf8"))
    start = i + 1
    if (typeof entry === "string") {
      if (start === buf.length) break
      throw new MetricsFileError({ path, line, reason: entry })
    }
    entries.push(entry)
    valid = start
  }
  return { entries, validBytes: valid }
}

/**
 * Appends one JSON line per entry to `path` (fsynced); a torn tail left by a crash is truncated first.
 * Throws `MetricsFileError` (and opens nothing) when a line before the last is bad.
 */
export const jsonlSink = (path: string): Sink => {
  const { validBytes } = readJsonl(path)
  const fd = openSync(path, existsSync(path) ? "r+" : "w+")
  ftruncateSync(fd, validBytes)
  let position = validBytes
  return {
    write: (e) => {
      const bytes = Buffer.from(JSON.stringify({ step: e.step, ...e.values }) + "\n", "utf8")
      writeSync(fd, bytes, 0, bytes.length, position)
      position += bytes.length
      fsyncSync(fd)
    },
    close: () => closeSync(fd)
  }
}

/** Builds the service over `sinks`; `initial` seeds the history (e.g. metrics restored on resume). */
export const make = (sinks: ReadonlyArray<Sink>, initial: ReadonlyArray<Entry> = []): Metrics["Service"] => {
  const entries: Array<Entry> = [...initial]
  return Metrics.of({
    record: (step, values) =>
      Effect.sync(() => {
        const entry: Entry = { step, values: { ...values } }
        entries.push(entry)
        for (const s of sinks) s.write(entry)
      }),
    history: () => entries
  })
}

/** The service over `sinks`, closing them when the layer's scope ends. */
export const layer = (sinks: ReadonlyArray<Sink>, initial: ReadonlyArray<Entry> = []): Layer.Layer<Metrics> =>
  Layer.effect(Metrics, Effect.acquireRelease(Effect.sync(() => make(sinks, initial)), () => Effect.sync(() => sinks.forEach((s) => s.close()))))

/** In-memory only, for tests. */
export const layerTest: Layer.Layer<Metrics> = Layer.sync(Metrics, () => make([]))
