/**
 * A reward computed by a scoring server the user runs (e.g. a reward model served elsewhere).
 *
 * Protocol, one request per batch:
 *
 *   POST <url>
 *   content-type: application/vnd.apache.arrow.stream
 *   accept: application/vnd.apache.arrow.stream
 *   body: an Arrow IPC stream with the columns `REQUEST_COLUMNS` of the rollouts batch
 *         (id, group_id, prompt, completion, answer, metadata, finish_reason), one row per completion
 *
 *   200 → an Arrow IPC stream holding a numeric column `score` with exactly one value per row, in
 *         order (Float32 preferred; any int/float type is read as Float32); a null score means
 *         "cannot score this row" and becomes NaN.
 *
 * Each attempt has its own timeout; network errors, timeouts, 408, 429 and 5xx are retried with
 * exponential backoff (`backoffMs`, ×2 each retry). Any other status, a body that is not such a stream,
 * or a wrong number of scores fails the call with an `HttpRewardError` naming the URL and what was
 * wrong: the reward stage then applies its `onError` policy (`fail` stops the run, `nan` scores the
 * batch NaN and counts it).
 */
import { Table, tableFromIPC, tableToIPC, type Vector } from "apache-arrow"
import { Effect, Schedule, Schema } from "effect"
import type { Reward } from "@r1flow/core"

/** Arrow IPC stream media type, for both directions. */
export const ARROW_STREAM = "application/vnd.apache.arrow.stream"

/** The rollouts columns the server receives. */
export const REQUEST_COLUMNS = ["id", "group_id", "prompt", "completion", "answer", "metadata", "finish_reason"] as const

const Positive = Schema.Finite.check(Schema.isGreaterThan(0))

/** The plugin's config section. */
export const Config = Schema.Struct({
  /** The scoring endpoint, `http://` or `https://`. */
  url: Schema.String.check(Schema.isPattern(/^https?:\/\/\S+$/)),
  /** Per-attempt timeout (default 30 s). Keep the reward stage's `timeoutMs` above the worst case of all attempts. */
  timeoutMs: Positive.pipe(Schema.withDecodingDefaultKey(Effect.succeed(30_000))),
  /** Retries after the first attempt (default 2). */
  retries: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(2))),
  /** Wait before the first retry, doubled for each next one (default 250 ms). */
  backoffMs: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(250)))
})
/** The plugin's config section. */
export type Config = typeof Config.Type

/** The server could not score the batch. `retryable` failures were retried before this was raised. */
export class HttpRewardError extends Schema.TaggedError<HttpRewardError>()("HttpRewardError", {
  message: Schema.String,
  retryable: Schema.Boolean
}) {}

/** The reward's name (its column is `reward_http`). */
export const NAME = "http"
/** The reward's version. */
export const VERSION = "0.1.0"

/** The request body for a rollouts batch: an Arrow IPC stream of `REQUEST_COLUMNS`. */
export const encodeRequest = (input: Reward.Input): Uint8Array => {
  const table = new Table(input.batch)
  const missing = REQUEST_COLUMNS.filter((c) => table.getChild(c) === null)
  if (missing.length > 0) throw new Error(`reward http: the batch lacks column(s) ${missing.join(", ")}`)
  return tableToIPC(table.select([...REQUEST_COLUMNS]), "stream")
}

/** Reads the `score` column of a response body; `rows` is the number of scores expected. */
export const decodeResponse = (body: Uint8Array, rows: number, url: string): Effect.Effect<Float32Array, HttpRewardError> =>
  Effect.gen(function*() {
    const table = yield* Effect.try({
      try: () => tableFromIPC(body),
      catch: (e) => new HttpRewardError({ message: `${url} answered a body that is not an Arrow IPC stream (${(e as Error).message})`, retryable: false })
    })
    const col = table.getChild("score") as Vector | null
    if (col === null) {
      return yield* new HttpRewardError({ message: `${url} answered without a "score" column (columns: ${table.schema.fields.map((f) => f.name).join(", ") || "none"})`, retryable: false })
    }
    if (!/^(Float|Int|Uint)/.test(String(col.type))) {
      return yield* new HttpRewardError({ message: `${url} answered a "score" column of type ${String(col.type)}; expected Float32 (or another number type)`, retryable: false })
    }
    if (col.length !== rows) {
      return yield* new HttpRewardError({ message: `${url} answered ${col.length} scores for ${rows} rows`, retryable: false })
    }
    const out = new Float32Array(rows)
    for (let i = 0; i < rows; i++) {
      const v = col.get(i) as number | bigint | null
      out[i] = v === null ? NaN : Number(v)
    }
    return out
  })

const RETRY_STATUS = new Set([408, 429])

/** One POST with its own timeout; any failure becomes an `HttpRewardError` saying whether to retry. */
const attempt = (config: Config, body: Uint8Array, signal: AbortSignal): Effect.Effect<Uint8Array, HttpRewardError> =>
  Effect.tryPromise({
    try: async () => {
      const response = await fetch(config.url, {
        method: "POST",
        headers: { "content-type": ARROW_STREAM, accept: ARROW_STREAM },
        body,
        signal: AbortSignal.any([signal, AbortSignal.timeout(config.timeoutMs)])
      })
      const bytes = new Uint8Array(await response.arrayBuffer())
      return { status: response.status, statusText: response.statusText, bytes }
    },
    catch: (e) => {
      const err = e as Error
      const timedOut = err.name === "TimeoutError"
      const aborted = signal.aborted
      return new HttpRewardError({
        message: aborted
          ? `the call to ${config.url} was aborted (the reward's timeout passed)`
          : timedOut
            ? `${config.url} did not answer within ${config.timeoutMs} ms`
            : `cannot reach ${config.url}: ${err.message}${err.cause instanceof Error ? ` (${err.cause.message})` : ""}`,
        retryable: !aborted
      })
    }
  }).pipe(
    Effect.flatMap(({ status, statusText, bytes }) =>
      status >= 200 && status < 300
        ? Effect.succeed(bytes)
        : Effect.fail(
            new HttpRewardError({
              message: `${config.url} answered ${status} ${statusText}: ${new TextDecoder().decode(bytes.subarray(0, 300)).trim()}`,
              retryable: status >= 500 || RETRY_STATUS.has(status)
            })
          )
    )
  )

/** Scores a batch on the server: encode, POST with retries, decode. */
export const scoreEffect = (config: Config, input: Reward.Input): Effect.Effect<Float32Array, HttpRewardError> =>
  Effect.gen(function*() {
    const body = yield* Effect.try({
      try: () => encodeRequest(input),
      catch: (e) => new HttpRewardError({ message: (e as Error).message, retryable: false })
    })
    let attempts = 0
    const bytes = yield* Effect.suspend(() => {
      attempts++
      return attempt(config, body, input.signal)
    }).pipe(
      Effect.retry({ schedule: Schedule.exponential(config.backoffMs, 2), times: config.retries, while: (e) => e.retryable }),
      Effect.mapError((e) => (attempts > 1 ? new HttpRewardError({ message: `${e.message} (after ${attempts} attempts)`, retryable: e.retryable }) : e))
    )
    return yield* decodeResponse(bytes, input.rows, config.url)
  })

/** The reward: one POST per batch. */
export const make = (config: Config): Reward.Reward => ({
  name: NAME,
  version: VERSION,
  score: (input) => Effect.runPromise(scoreEffect(config, input))
})
