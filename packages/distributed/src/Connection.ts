/**
 * A NATS connection as a scoped resource. It reconnects forever with a bounded wait between attempts, so
 * a nats-server restart (JetStream on disk) is a pause for the trainer and the workers, not a failure;
 * only the first connect fails fast, so a wrong url is an error instead of a hang.
 */
import { connect, nkeyAuthenticator, type NatsConnection, type NodeConnectionOptions } from "@nats-io/transport-node"
import { Context, Effect, Layer, Schedule, Schema, type Scope } from "effect"

/** A NATS operation failed; `transient` when retrying after a reconnect may succeed. */
export class ConnectionError extends Schema.TaggedError<ConnectionError>()("ConnectionError", {
  url: Schema.String,
  operation: Schema.String,
  transient: Schema.Boolean,
  message: Schema.String,
  cause: Schema.optional(Schema.Defect())
}) {}

/** Where and how to connect. Credentials left out are read from the environment (`fromEnv`). */
export interface Config {
  /** e.g. `nats://host:4222`; several comma-separated urls form a cluster pool. */
  readonly url: string
  readonly user?: string
  readonly password?: string
  /** An nkey seed (`SU…`), instead of user/password. */
  readonly nkeySeed?: string
  /** The client name the server shows (`r1flow-trainer`, `r1flow-worker-3`). */
  readonly name?: string
  /** Longest wait between reconnect attempts, in ms (default 1000). */
  readonly reconnectWaitMs?: number
}

/** `config` with missing credentials taken from `R1FLOW_NATS_USER`, `R1FLOW_NATS_PASSWORD`, `R1FLOW_NATS_NKEY`. */
export const fromEnv = (config: Config, env: Record<string, string | undefined> = process.env): Config => {
  const pick = (own: string | undefined, key: string) => own ?? (env[key] !== undefined && env[key] !== "" ? env[key] : undefined)
  const user = pick(config.user, "R1FLOW_NATS_USER")
  const password = pick(config.password, "R1FLOW_NATS_PASSWORD")
  const nkeySeed = pick(config.nkeySeed, "R1FLOW_NATS_NKEY")
  return { ...config, ...(user !== undefined ? { user } : {}), ...(password !== undefined ? { password } : {}), ...(nkeySeed !== undefined ? { nkeySeed } : {}) }
}

const TRANSIENT = new Set(["TimeoutError", "NoRespondersError", "RequestError", "ConnectionError", "DrainingConnectionError"])

/**
 * True for failures a reconnect can cure: timeouts, no responders (JetStream not up yet), lost connection,
 * and a pull the server ended because it is going down (409 `server shutdown`: a stopping nats-server
 * answers every pending pull so; the pull is made again once the client has reconnected) or moving a
 * stream (409 `leadership change`), and a pull given up on for `heartbeats missed` (the client's idle
 * heartbeat monitor ends a pending pull once two heartbeats fail to come, as they do while the server is
 * down). Other 409s (consumer or stream deleted) are not transient.
 */
export const isTransient = (cause: unknown): boolean => {
  if (!(cause instanceof Error)) return false
  if (TRANSIENT.has(cause.name) || TRANSIENT.has(cause.constructor.name)) return true
  // JetStream answers 503 while it recovers its store after a server restart.
  const code = (cause as { code?: unknown }).code
  if (/server shutdown|leadership change|heartbeats missed/i.test(cause.message)) return true
  return code === 503 || code === "503" || /timeout|no responders|disconnect|503/i.test(cause.message)
}

const describe = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause))

/** Runs a promise-returning NATS call as an Effect; a rejection is a `ConnectionError` naming `url` and `operation`. */
export const call = <A>(nc: NatsConnection, operation: string, f: () => PromiseLike<A>): Effect.Effect<A, ConnectionError> =>
  Effect.tryPromise({
    try: () => Promise.resolve(f()),
    catch: (cause) => new ConnectionError({ url: nc.getServer(), operation, transient: isTransient(cause), message: `${operation} on ${nc.getServer()}: ${describe(cause)}`, cause })
  })

/**
 * Retries `self` while it fails with a transient `ConnectionError` (spaced 250 ms, for at most `forMs`,
 * default 120 s): long enough to ride out a server restart, short enough that a dead server is reported.
 */
export const retrying = <A, E, R>(self: Effect.Effect<A, E | ConnectionError, R>, forMs = 120_000): Effect.Effect<A, E | ConnectionError, R> =>
  Effect.retry(self, {
    while: (e) => e instanceof ConnectionError && e.transient,
    schedule: Schedule.spaced(250),
    times: Math.ceil(forMs / 250)
  })

const options = (c: Config): NodeConnectionOptions => ({
  servers: c.url.split(",").map((s) => s.trim()),
  ...(c.name !== undefined ? { name: c.name } : {}),
  ...(c.nkeySeed !== undefined
    ? { authenticator: nkeyAuthenticator(new TextEncoder().encode(c.nkeySeed)) }
    : c.user !== undefined ? { user: c.user, pass: c.password ?? "" } : {}),
  maxReconnectAttempts: -1,
  reconnectTimeWait: Math.min(c.reconnectWaitMs ?? 1000, 250),
  reconnectJitter: Math.max(0, (c.reconnectWaitMs ?? 1000) - 250),
  pingInterval: 5000,
  maxPingOut: 3
})

/** Opens a connection (credentials from `config`, else the environment); drained when the scope closes. */
export const open = (config: Config): Effect.Effect<NatsConnection, ConnectionError, Scope.Scope> => {
  const c = fromEnv(config)
  return Effect.acquireRelease(
    Effect.tryPromise({
      try: () => connect(options(c)),
      catch: (cause) => new ConnectionError({ url: c.url, operation: "connect", transient: isTransient(cause), message: `cannot connect to ${c.url}: ${describe(cause)}`, cause })
    }),
    // drain flushes what was published; close is the fallback for a connection that is already gone.
    (nc) => Effect.promise(() => nc.isClosed() ? Promise.resolve() : nc.drain().catch(() => nc.close()))
  )
}

/** Largest payload the connected server accepts, in bytes (its INFO `max_payload`; 1 MiB before INFO). */
export const maxPayload = (nc: NatsConnection): number => nc.info?.max_payload ?? 1024 * 1024

/** The NATS connection service the trainer and the workers share. */
export class Nats extends Context.Service<Nats, NatsConnection>()("@r1flow/distributed/Nats") {
  /** A connection opened from `config`, drained when the layer's scope closes. */
  static readonly layer = (config: Config): Layer.Layer<Nats, ConnectionError> => Layer.effect(Nats, open(config))
}
