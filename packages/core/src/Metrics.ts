/**
 * Per-step scalar metrics. Stages report named numbers for a step; sinks write them out.
 *
 * The JSONL sink is append-only and crash-safe: each record is one line written with a single
 * `write` and fsynced; on open, a torn last line (a crash mid-write) is truncated away, so the file
 * always holds whole records and a resumed run appends after the last good one.
 */
import { closeSync, existsSync, fsyncSync, ftruncateSync, openSync, readFileSync, writeSync } from "node:fs"
import { Context, Effect, Layer } from "effect"

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
 * Reads a metrics JSONL file, dropping a torn final line. Returns the entries and the byte length
 * of the whole-record prefix (what `jsonlSink` truncates the file to).
 */
export const readJsonl = (path: string): { entries: Array<Entry>; validBytes: number } => {
  if (!existsSync(path)) return { entries: [], validBytes: 0 }
  const buf = readFileSync(path)
  const entries: Array<Entry> = []
  let start = 0
  let valid = 0
  for (let i = 0; i < buf.length; i++) {
    if (buf[i] !== 0x0a) continue
    const line = buf.subarray(start, i).toString("utf8")
    start = i + 1
    let parsed: unknown
    try {
      parsed = JSON.parse(line)
    } catch {
      break
    }
    const { step, ...values } = parsed as { step: number } & Record<string, number>
    entries.push({ step, values })
    valid = i + 1
  }
  return { entries, validBytes: valid }
}

/** Appends one JSON line per entry to `path` (fsynced); a torn tail left by a crash is truncated first. */
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
