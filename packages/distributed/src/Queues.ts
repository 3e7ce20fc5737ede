/**
 * The JetStream streams of one run:
 *
 *   R1FLOW_<run>_TASKS    work queue   r1flow.<run>.tasks        one small envelope per prompt group
 *   R1FLOW_<run>_RESULTS  limits       r1flow.<run>.results      one small envelope per scored group
 *   R1FLOW_<run>_DATA     limits       r1flow.<run>.data.<id>.<i> the Arrow IPC frames (`Wire`) of both
 *
 * Why envelopes and a data stream: a work queue hands each message to whichever worker pulls next, so the
 * frames of one group sent as queue messages would be scattered over workers. The envelope is the unit of
 * work (acked, redelivered, counted); its frames are read back by subject with JetStream direct get
 * (server 2.9+), and purged once the trainer has the group.
 *
 * Delivery is at-least-once: a worker acks its task only after its result is stored, and an unacked task
 * comes back after `ackWaitMs` (a live worker extends it with `working()` while it draws). Duplicates are
 * therefore possible by design; the trainer drops them (`Trainer`, by group id and policy version).
 */
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, RetentionPolicy, StorageType, type Consumer, type JetStreamClient, type JetStreamManager, type JsMsg, type StreamConfig } from "@nats-io/jetstream"
import { nanos, nuid, type NatsConnection } from "@nats-io/transport-node"
import type { Batch } from "@r1flow/core"
import type { RecordBatch, Schema as ArrowSchema, TypeMap } from "apache-arrow"
import { Effect, Option, Schema } from "effect"
import * as Connection from "./Connection.js"
import * as Wire from "./Wire.js"

/** A run id: it names streams, subjects and KV keys, so only letters, digits, `_` and `-`. */
export const RunId = Schema.String.check(Schema.isPattern(/^[A-Za-z0-9_-]{1,64}$/))

const Version = Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))

/** The envelope of one prompt group on the work queue. */
export const Task = Schema.Struct({
  runId: RunId,
  groupId: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  /** The policy version the group is to be sampled at. */
  policyVersion: Version,
  /** The group's own seed, so a group samples the same whichever worker draws it. */
  seed: Schema.Int,
  /** The trainer's fingerprint (reward plugins, backend); a worker with another refuses the task. */
  fingerprint: Schema.String,
  /** The trainer session that published it (`Trainer`); a result of another session is dropped. */
  session: Schema.String,
  messageId: Schema.String,
  frames: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))
})
/** A task envelope. */
export type Task = typeof Task.Type

/** The envelope of one scored group on the results stream. */
export const Result = Schema.Struct({
  ...Task.fields,
  /** The worker that drew it. */
  workerId: Schema.String,
  /** How long the draw took, in ms (for the staleness and throughput metrics). */
  drawMs: Schema.Number
})
/** A result envelope. */
export type Result = typeof Result.Type

/** A run's queue settings. */
export interface Options {
  readonly runId: string
  /** How long a pulled task may go without an ack or a `working()` before it is redelivered (default 30 s). */
  readonly ackWaitMs?: number
  /** Deliveries of one task before JetStream gives up on it (default 5). */
  readonly maxDeliver?: number
}

/** Stream and subject names of a run. */
export const names = (runId: string) => ({
  tasks: `R1FLOW_${runId}_TASKS`,
  results: `R1FLOW_${runId}_RESULTS`,
  data: `R1FLOW_${runId}_DATA`,
  tasksSubject: `r1flow.${runId}.tasks`,
  resultsSubject: `r1flow.${runId}.results`,
  dataSubject: (id: string, i: number) => `r1flow.${runId}.data.${id}.${i}`,
  workers: "workers",
  trainer: "trainer"
})

/** A pulled envelope with its JetStream message, to ack, nak, or keep alive. */
export interface Pulled<A> {
  readonly envelope: A
  readonly msg: JsMsg
}

/** One run's queues, as the trainer and the workers use them. */
export interface Queues {
  readonly runId: string
  readonly nc: NatsConnection
  readonly jsm: JetStreamManager
  readonly ackWaitMs: number
  readonly maxDeliver: number
  /** Publishes a group's prompts and its envelope; the task's stream sequence is returned. */
  readonly publishTask: (meta: Omit<Task, "messageId" | "frames" | "runId">, prompts: RecordBatch<Batch.PromptsType>) => Effect.Effect<{ readonly seq: number; readonly task: Task }, Connection.ConnectionError | Wire.WireError>
  /** The next task for a worker, or none within `expiresMs` (≥ 1000). */
  readonly nextTask: (expiresMs: number) => Effect.Effect<Option.Option<Pulled<Task>>, Connection.ConnectionError>
  /** Publishes a scored group and its envelope. */
  readonly publishResult: (meta: Omit<Result, "messageId" | "frames" | "runId">, scored: RecordBatch<Batch.ScoredType>) => Effect.Effect<Result, Connection.ConnectionError | Wire.WireError>
  /** The next result for the trainer, or none within `expiresMs` (≥ 1000). */
  readonly nextResult: (expiresMs: number) => Effect.Effect<Option.Option<Pulled<Result>>, Connection.ConnectionError>
  /** Reads back and checks the Arrow batch a task or a result refers to. */
  readonly batch: <T extends TypeMap>(envelope: Task | Result, schema: ArrowSchema<T>) => Effect.Effect<RecordBatch<T>, Connection.ConnectionError | Wire.WireError>
  /** Purges the frames of a message that is no longer needed. */
  readonly drop: (messageId: string) => Effect.Effect<void, Connection.ConnectionError>
  /** Acks a pulled message, waiting for the server's confirmation. */
  readonly ack: (msg: JsMsg) => Effect.Effect<void, Connection.ConnectionError>
}

const streamConfigs = (runId: string): Array<Partial<StreamConfig> & { name: string }> => {
  const n = names(runId)
  const base = { storage: StorageType.File, num_replicas: 1, duplicate_window: nanos(120_000) }
  return [
    { ...base, name: n.tasks, subjects: [n.tasksSubject], retention: RetentionPolicy.Workqueue },
    { ...base, name: n.results, subjects: [n.resultsSubject], retention: RetentionPolicy.Limits },
    { ...base, name: n.data, subjects: [`r1flow.${runId}.data.>`], retention: RetentionPolicy.Limits, allow_direct: true }
  ]
}

/** Creates the run's streams and durable consumers when absent (idempotent: the trainer and each worker call it). */
const ensure = (nc: NatsConnection, jsm: JetStreamManager, o: Required<Options>) =>
  Effect.gen(function*() {
    const n = names(o.runId)
    for (const config of streamConfigs(o.runId)) {
      const exists = yield* Connection.call(nc, `stream info ${config.name}`, () => jsm.streams.info(config.name).then(() => true, (e: unknown) => {
        if (e instanceof Error && /not found/i.test(e.message)) return false
        throw e
      }))
      if (!exists) yield* Connection.call(nc, `create stream ${config.name}`, () => jsm.streams.add(config))
    }
    const consumer = (stream: string, durable: string, ackWaitMs: number, maxDeliver: number) =>
      Connection.call(nc, `create consumer ${stream}/${durable}`, () =>
        jsm.consumers.add(stream, { durable_name: durable, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All, ack_wait: nanos(ackWaitMs), max_deliver: maxDeliver }))
    yield* consumer(n.tasks, n.workers, o.ackWaitMs, o.maxDeliver)
    // The trainer acks a result only when `collect` hands it over; a long wait there must not redeliver it.
    yield* consumer(n.results, n.trainer, 10 * 60_000, -1)
  })

const publishFrames = (nc: NatsConnection, js: JetStreamClient, runId: string, id: string, frames: ReadonlyArray<Uint8Array>) =>
  Effect.forEach(frames, (frame, i) =>
    Connection.retrying(Connection.call(nc, `publish frame ${i + 1}/${frames.length} of ${id}`, () =>
      js.publish(names(runId).dataSubject(id, i), frame, { msgID: `${id}.${i}` }))), { concurrency: 8, discard: true })

const readFrames = (nc: NatsConnection, jsm: JetStreamManager, runId: string, id: string, count: number) =>
  Effect.forEach(Array.from({ length: count }, (_, i) => i), (i) =>
    Connection.retrying(Connection.call(nc, `read frame ${i + 1}/${count} of ${id}`, () =>
      jsm.direct.getMessage(names(runId).data, { last_by_subj: names(runId).dataSubject(id, i) }))), { concurrency: 8 }).pipe(
    // A frame the server no longer has is left out, so reassembly names it as missing.
    Effect.map((msgs) => msgs.flatMap((m) => (m === null ? [] : [m.data])))
  )

const decodeEnvelope = <S extends Schema.Codec<any, any>>(schema: S, msg: JsMsg, what: string) =>
  Schema.decodeUnknownEffect(Schema.fromJsonString(schema))(msg.string()).pipe(
    Effect.mapError((e) => new Wire.WireError({ messageId: `${what} seq ${msg.seq}`, reason: "Corrupt", message: `${what} envelope at stream seq ${msg.seq} does not parse: ${e.message}` }))
  )

/**
 * Pulls one envelope from `consumer`. An envelope that does not parse is terminated (it can never parse
 * on redelivery) and reported as none, so one bad message cannot stall a queue.
 */
const pull = <S extends Schema.Codec<any, any>>(nc: NatsConnection, consumer: Consumer, schema: S, what: string, expiresMs: number) =>
  Connection.retrying(Connection.call(nc, `pull ${what}`, () => consumer.next({ expires: Math.max(1000, expiresMs) }))).pipe(
    Effect.flatMap((msg) => {
      if (msg === null) return Effect.succeedNone
      return decodeEnvelope(schema, msg, what).pipe(
        Effect.map((envelope): Option.Option<Pulled<S["Type"]>> => Option.some({ envelope, msg })),
        Effect.catchTag("WireError", (e) => Effect.logError(e.message).pipe(Effect.andThen(Effect.sync(() => msg.term(e.message))), Effect.as(Option.none())))
      )
    })
  )

const publishEnvelope = (nc: NatsConnection, js: JetStreamClient, subject: string, envelope: unknown, msgID: string) =>
  Connection.retrying(Connection.call(nc, `publish ${subject}`, () => js.publish(subject, JSON.stringify(envelope), { msgID })))

/** The queues of `options.runId` on `nc`: streams and consumers are created when absent. */
export const make = (nc: NatsConnection, options: Options): Effect.Effect<Queues, Connection.ConnectionError> =>
  Effect.gen(function*() {
    const o: Required<Options> = { ackWaitMs: 30_000, maxDeliver: 5, ...options }
    const n = names(o.runId)
    const js = jetstream(nc)
    const jsm = yield* Connection.call(nc, "jetstream manager", () => jetstreamManager(nc))
    yield* Connection.retrying(ensure(nc, jsm, o))
    const workers = yield* Connection.retrying(Connection.call(nc, "get consumer workers", () => js.consumers.get(n.tasks, n.workers)))
    const trainer = yield* Connection.retrying(Connection.call(nc, "get consumer trainer", () => js.consumers.get(n.results, n.trainer)))
    const send = (subject: string, meta: object, batch: RecordBatch, tag: string) =>
      Effect.gen(function*() {
        const messageId = `${tag}-${nuid.next()}`
        const frames = yield* Wire.encode(batch, { messageId, maxPayload: Connection.maxPayload(nc) })
        yield* publishFrames(nc, js, o.runId, messageId, frames)
        const envelope = { ...meta, runId: o.runId, messageId, frames: frames.length }
        const ack = yield* publishEnvelope(nc, js, subject, envelope, messageId)
        return { seq: ack.seq, envelope }
      })
    return {
      runId: o.runId, nc, jsm, ackWaitMs: o.ackWaitMs, maxDeliver: o.maxDeliver,
      publishTask: (meta, prompts) =>
        Effect.map(send(n.tasksSubject, meta, prompts, `g${meta.groupId}v${meta.policyVersion}`), ({ envelope, seq }) => ({ seq, task: envelope as Task })),
      nextTask: (expiresMs) => pull(nc, workers, Task, "task", expiresMs),
      publishResult: (meta, scored) =>
        Effect.map(send(n.resultsSubject, meta, scored, `r${meta.groupId}v${meta.policyVersion}`), ({ envelope }) => envelope as Result),
      nextResult: (expiresMs) => pull(nc, trainer, Result, "result", expiresMs),
      batch: (envelope, schema) =>
        Effect.flatMap(readFrames(nc, jsm, o.runId, envelope.messageId, envelope.frames), (frames) => Wire.decode(envelope.messageId, frames, schema)),
      drop: (messageId) =>
        Effect.asVoid(Connection.retrying(Connection.call(nc, `purge ${messageId}`, () => jsm.streams.purge(n.data, { filter: `r1flow.${o.runId}.data.${messageId}.>` })))),
      ack: (msg) => Effect.asVoid(Connection.retrying(Connection.call(nc, `ack seq ${msg.seq}`, () => msg.ackAck())))
    } satisfies Queues
  })

