/**
 * A rollout worker: pulls prompt groups from the run's work queue, makes sure it holds the policy version
 * each group is to be sampled at, draws (generate + score, supplied by the engine), publishes the scored
 * group and only then acks the task, so a worker that dies mid-group loses nothing: JetStream redelivers
 * the task after `ackWaitMs` to another worker. While a draw runs the worker tells JetStream it is still
 * working, so a slow draw is not mistaken for a dead worker.
 *
 * Handshake: the trainer writes its fingerprint (reward plugins, backend: a string the engine builds) to
 * KV, and stamps it on every task; a worker with another fingerprint refuses to start, and refuses (naks)
 * any task stamped differently, because its rewards or numerics would not be the trainer's.
 */
import type { JsMsg } from "@nats-io/jetstream"
import type { NatsConnection } from "@nats-io/transport-node"
import { Batch, Stage } from "@r1flow/core"
import type { RecordBatch } from "apache-arrow"
import { Effect, Fiber, Option, Schema, Semaphore } from "effect"
import * as Connection from "./Connection.js"
import * as Queues from "./Queues.js"
import * as Weights from "./Weights.js"

/** The worker and the trainer disagree on what they run. */
export class HandshakeError extends Schema.TaggedError<HandshakeError>()("HandshakeError", {
  runId: Schema.String,
  workerId: Schema.String,
  expected: Schema.String,
  got: Schema.String,
  message: Schema.String
}) {}

/** What a draw is told about its group. */
export interface DrawMeta {
  readonly policyVersion: number
  readonly seed: number
  readonly groupId: number
}

/** How a worker runs; `draw` and `load` are the engine's. */
export interface Options<E1, R1, E2, R2> extends Omit<Queues.Options, "runId"> {
  readonly runId: string
  readonly workerId: string
  /** Reward plugins and backend as a string; must equal the trainer's. */
  readonly fingerprint: string
  /** Prompts of one group → its scored rollouts, at the policy `load` last installed. */
  readonly draw: (prompts: RecordBatch<Batch.PromptsType>, meta: DrawMeta) => Effect.Effect<RecordBatch<Batch.ScoredType>, E1, R1>
  /** Installs `version`'s weights in the policy; `changed` names the tensors that differ from the last call's. */
  readonly load: (version: number, weights: Weights.Tensors, changed: ReadonlyArray<string>) => Effect.Effect<void, E2, R2>
  /** How long one pull waits for a task, in ms (≥ 1000, default 1000). */
  readonly pullMs?: number
  /** How long to wait for the trainer's fingerprint before giving up, in ms (default 60 s). */
  readonly handshakeMs?: number
  /** Called after each acked group (tests and metrics count them). */
  readonly onGroup?: (task: Queues.Task) => void
}

/** KV key of a run's fingerprint. */
export const fingerprintKey = (runId: string) => `${runId}.fingerprint`

const refuse = (runId: string, workerId: string, expected: string, got: string) =>
  new HandshakeError({
    runId, workerId, expected, got,
    message: `worker ${workerId} refused by run ${runId}: its fingerprint ${JSON.stringify(got)} differs from the trainer's ${JSON.stringify(expected)} (reward plugins and backend must match the trainer's)`
  })

/** Waits for the trainer's fingerprint in KV and fails with a `HandshakeError` when it differs from ours. */
export const handshake = (store: Weights.Store, workerId: string, fingerprint: string, waitMs = 60_000): Effect.Effect<void, HandshakeError | Connection.ConnectionError> =>
  Effect.gen(function*() {
    const deadline = Date.now() + waitMs
    while (true) {
      const entry = yield* Connection.retrying(Connection.call(store.nc, `get ${fingerprintKey(store.runId)}`, () => store.kv.get(fingerprintKey(store.runId))))
      if (entry !== null && entry.operation === "PUT") {
        const expected = entry.string()
        if (expected !== fingerprint) return yield* refuse(store.runId, workerId, expected, fingerprint)
        return
      }
      if (Date.now() > deadline) return yield* refuse(store.runId, workerId, "(no trainer fingerprint after " + waitMs + " ms)", fingerprint)
      yield* Effect.sleep(250)
    }
  })

/** Keeps `msg` from being redelivered while `self` runs, by `working()` every third of the ack wait. */
const keepAlive = <A, E, R>(msg: JsMsg, ackWaitMs: number, self: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const beat = yield* Effect.forkChild(Effect.forever(Effect.andThen(Effect.sleep(Math.max(100, ackWaitMs / 3)), Effect.sync(() => msg.working()))))
    return yield* Effect.ensuring(self, Fiber.interrupt(beat))
  })

/**
 * Loads `version` through `load` unless it is the one held, of trainer session `session` when given (a
 * resumed trainer republishes a version number under its own session); one load at a time (the KV watch
 * prefetches too, without a session).
 */
const weightsCache = <E2, R2>(store: Weights.Store, load: Options<unknown, unknown, E2, R2>["load"]) =>
  Effect.map(Semaphore.make(1), (lock) => {
    let held: Weights.Held | undefined
    return (version: number, session?: string) =>
      Semaphore.withPermit(lock, Effect.gen(function*() {
        if (held?.manifest.version === version && (session === undefined || held.manifest.session === session)) return
        const got = yield* Weights.fetch(store, version, held)
        yield* load(version, got.tensors, got.changed)
        held = got
      }))
  })

/** The errors a worker stops on; transport hiccups are retried inside, corrupt groups are skipped. */
export type WorkerError<E1, E2> = E1 | E2 | HandshakeError | Connection.ConnectionError | Weights.WeightsError | Stage.StageError

/** Draws one pulled group and publishes its result; the task is acked only after the result is stored. */
const processOne = <E1, R1, E2, R2>(q: Queues.Queues, o: Options<E1, R1, E2, R2>, ensure: (v: number, session?: string) => Effect.Effect<void, E2 | Connection.ConnectionError | Weights.WeightsError, R2>, pulled: Queues.Pulled<Queues.Task>) =>
  Effect.gen(function*() {
    const { envelope: task, msg } = pulled
    if (task.fingerprint !== o.fingerprint) {
      msg.nak() // another worker, one that matches, may take it
      return yield* refuse(o.runId, o.workerId, task.fingerprint, o.fingerprint)
    }
    const prompts = yield* q.batch(task, Batch.Prompts).pipe(Effect.map(Option.some), Effect.catchTag("WireError", (e) =>
      // Damaged bytes stay damaged: redelivery cannot help, so the task is terminated and the trainer told by the advisory.
      Effect.logError(e.message).pipe(Effect.andThen(Effect.sync(() => msg.term(e.message))), Effect.as(Option.none()))))
    if (Option.isNone(prompts)) return
    const t0 = performance.now()
    const scored = yield* keepAlive(msg, q.ackWaitMs, Effect.gen(function*() {
      yield* ensure(task.policyVersion, task.session)
      const out = yield* o.draw(prompts.value, { policyVersion: task.policyVersion, seed: task.seed, groupId: task.groupId })
      return yield* Stage.check(`worker ${o.workerId} draw`, Batch.Scored, out)
    }))
    const meta = { groupId: task.groupId, policyVersion: task.policyVersion, seed: task.seed, fingerprint: o.fingerprint, session: task.session, workerId: o.workerId, drawMs: performance.now() - t0 }
    yield* keepAlive(msg, q.ackWaitMs, q.publishResult(meta, scored).pipe(Effect.catchTag("WireError", (e) => Effect.die(e))))
    yield* q.ack(msg)
    o.onGroup?.(task)
  })

/**
 * Runs a worker until interrupted: handshake, then pull → weights → draw → publish → ack, one group at a
 * time. New versions announced in KV are fetched ahead of the tasks that need them.
 */
export const run = <E1, R1, E2, R2>(nc: NatsConnection, o: Options<E1, R1, E2, R2>): Effect.Effect<never, WorkerError<E1, E2>, R1 | R2> =>
  Effect.scoped(Effect.gen(function*() {
    const store = yield* Weights.store(nc, o.runId)
    yield* handshake(store, o.workerId, o.fingerprint, o.handshakeMs)
    const q = yield* Queues.make(nc, o)
    const ensure = yield* weightsCache(store, o.load)
    // Prefetch is best effort: a failure here shows up again, with its cause, when a task needs that version.
    yield* Effect.forkScoped(Weights.watch(store, (v) => ensure(v)).pipe(Effect.catch((e) => Effect.logWarning(`worker ${o.workerId}: weights prefetch stopped: ${String(e)}`))))
    return yield* Effect.forever(Effect.flatMap(q.nextTask(o.pullMs ?? 1000), (pulled) =>
      Option.isNone(pulled) ? Effect.void : processOne(q, o, ensure, pulled.value)))
  }))
