/**
 * The trainer's side of the queues: publish prompt groups at the current policy version, collect their
 * scored results, publish new weights.
 *
 * Exactly-once on top of at-least-once: a group is outstanding from `publish` until `collect` hands its
 * result over; a result for a group that is not outstanding at that version (a redelivered task drawn
 * twice, a stale draw that was requeued) is acked and dropped, so no group is ever counted twice.
 * `collect` hands results over in publish order by default, whatever worker finished first, so a run's
 * updates do not depend on the worker count or timing (with `maxStaleness: 0`).
 *
 * A trainer is a session: a fresh id (`session`) stamped on each task it publishes, carried back on each
 * result, and on each weights manifest. A result of another session is dropped like a duplicate: a
 * trainer killed and resumed from a checkpoint publishes the same group ids at the same versions again,
 * and a worker still drawing the killed trainer's task (or one whose result landed after the restart)
 * must not hand the new trainer a group it did not publish, drawn with weights it did not make. (The
 * engine also deletes the run's streams when a trainer starts, so nothing older is even queued.)
 *
 * Staleness is the trainer's version minus the version a result was sampled at. A result staler than
 * `maxStaleness` is dropped and its group republished at the current version, with the same seed.
 */
import { nuid, type NatsConnection } from "@nats-io/transport-node"
import { Batch } from "@r1flow/core"
import type { RecordBatch } from "apache-arrow"
import { Effect, Option, Schema, type Scope } from "effect"
import * as Connection from "./Connection.js"
import * as Queues from "./Queues.js"
import * as Weights from "./Weights.js"
import * as Wire from "./Wire.js"
import * as Worker from "./Worker.js"

/** The trainer cannot go on: no weights published yet, a group JetStream gave up on, or a timeout. */
export class TrainerError extends Schema.TaggedError<TrainerError>()("TrainerError", {
  runId: Schema.String,
  reason: Schema.Literals(["NoWeights", "Undeliverable", "Timeout"]),
  message: Schema.String
}) {}

/** A prompt group to publish. `groupId` is unique within the run. */
export interface Group {
  readonly groupId: number
  readonly seed: number
  readonly prompts: RecordBatch<Batch.PromptsType>
}

/** A collected result. */
export interface Collected {
  readonly groupId: number
  readonly seed: number
  /** The version it was sampled at. */
  readonly policyVersion: number
  /** Trainer version at collection minus `policyVersion`. */
  readonly staleness: number
  readonly workerId: string
  readonly drawMs: number
  readonly scored: RecordBatch<Batch.ScoredType>
}

/** What `collect` returns besides the results: what it threw away and why. */
export interface Collection {
  readonly results: ReadonlyArray<Collected>
  /** Results dropped as already counted, superseded, or of another trainer session. */
  readonly duplicates: number
  /** Groups republished at the current version because their result was too stale. */
  readonly requeued: ReadonlyArray<number>
  /** Results refused for a fingerprint other than the trainer's (their groups are republished). */
  readonly refused: number
}

/** How to collect. */
export interface CollectOptions {
  /** Largest staleness accepted (0 = synchronous). */
  readonly maxStaleness: number
  /** `group` (default): in publish order, for determinism; `arrival`: as results come. */
  readonly order?: "group" | "arrival"
  /** Give up after this many ms without reaching `n` (default: wait forever). */
  readonly timeoutMs?: number
}

/** The trainer's handle on a run. */
export interface Trainer {
  readonly runId: string
  /** This trainer's session id, on its tasks, the results of them and its weights manifests. */
  readonly session: string
  /** The last version given to `publishWeights`. */
  readonly version: () => number | undefined
  /** Stores `tensors` as `version` (changed tensors only) and announces it to the workers. */
  readonly publishWeights: (version: number, tensors: Weights.Tensors) => Effect.Effect<void, Connection.ConnectionError>
  /** Queues groups to be sampled at the current version. */
  readonly publish: (groups: ReadonlyArray<Group>) => Effect.Effect<void, TrainerError | Connection.ConnectionError | Wire.WireError>
  /** The next `n` results (fewer only if fewer groups are outstanding). */
  readonly collect: (n: number, options: CollectOptions) => Effect.Effect<Collection, TrainerError | Connection.ConnectionError | Wire.WireError>
  /** Groups published and not yet collected. */
  readonly outstanding: () => number
}

/** How the trainer runs. */
export interface Options extends Queues.Options {
  /** Reward plugins and backend as a string; workers must present the same. */
  readonly fingerprint: string
}

interface Outstanding {
  readonly groupId: number
  readonly seed: number
  readonly prompts: RecordBatch<Batch.PromptsType>
  readonly order: number
  policyVersion: number
  taskSeq: number
  taskMessageId: string
}

interface Arrived {
  readonly envelope: Queues.Result
  readonly scored: RecordBatch<Batch.ScoredType>
  readonly msg: Queues.Pulled<Queues.Result>["msg"]
}

interface State {
  readonly q: Queues.Queues
  readonly store: Weights.Store
  readonly fingerprint: string
  readonly session: string
  version: number | undefined
  manifest: Weights.Manifest | undefined
  readonly outstanding: Map<number, Outstanding>
  /** Results held until `collect` hands them over; Map order is arrival order. */
  readonly arrived: Map<number, Arrived>
  /** Task stream sequences JetStream stopped redelivering (max_deliver advisories). */
  readonly exhausted: Set<number>
  order: number
}

const sendTask = (s: State, o: Outstanding) =>
  Effect.map(s.q.publishTask({ groupId: o.groupId, policyVersion: o.policyVersion, seed: o.seed, fingerprint: s.fingerprint, session: s.session }, o.prompts), ({ seq, task }) => {
    o.taskSeq = seq
    o.taskMessageId = task.messageId
  })

const publishGroups = (s: State, groups: ReadonlyArray<Group>) =>
  Effect.gen(function*() {
    const version = s.version
    if (version === undefined) return yield* new TrainerError({ runId: s.q.runId, reason: "NoWeights", message: `run ${s.q.runId}: publish weights (publishWeights) before publishing groups, so workers have a version to sample at` })
    for (const g of groups) {
      const o: Outstanding = { groupId: g.groupId, seed: g.seed, prompts: g.prompts, order: s.order++, policyVersion: version, taskSeq: -1, taskMessageId: "" }
      s.outstanding.set(g.groupId, o)
      yield* sendTask(s, o)
    }
  })

/** Republishes `o` at the current version: its old draw is superseded (results at the old version become duplicates). */
const requeue = (s: State, o: Outstanding) =>
  Effect.gen(function*() {
    yield* s.q.drop(o.taskMessageId)
    o.policyVersion = s.version ?? o.policyVersion
    yield* sendTask(s, o)
  })

const discard = (s: State, a: Queues.Pulled<Queues.Result>) => Effect.andThen(s.q.ack(a.msg), s.q.drop(a.envelope.messageId))

/** Takes in one pulled result: held for `collect`, or dropped as a duplicate / refused. */
const receive = (s: State, pulled: Queues.Pulled<Queues.Result>, tally: { duplicates: number; refused: number }) =>
  Effect.gen(function*() {
    const e = pulled.envelope
    const o = s.outstanding.get(e.groupId)
    if (e.fingerprint !== s.fingerprint) {
      tally.refused++
      yield* Effect.logWarning(`run ${s.q.runId}: result of group ${e.groupId} from worker ${e.workerId} refused: fingerprint ${JSON.stringify(e.fingerprint)} is not the trainer's ${JSON.stringify(s.fingerprint)}`)
      yield* discard(s, pulled)
      if (o !== undefined && e.session === s.session && o.policyVersion === e.policyVersion && !s.arrived.has(e.groupId)) yield* requeue(s, o)
      return
    }
    if (e.session !== s.session || o === undefined || o.policyVersion !== e.policyVersion || s.arrived.has(e.groupId)) {
      tally.duplicates++
      return yield* discard(s, pulled)
    }
    const scored = yield* s.q.batch(e, Batch.Scored).pipe(Effect.map(Option.some), Effect.catchTag("WireError", (err) =>
      // A damaged result is redrawn rather than trained on.
      Effect.logError(err.message).pipe(Effect.andThen(discard(s, pulled)), Effect.andThen(requeue(s, o)), Effect.as(Option.none()))))
    if (Option.isSome(scored)) s.arrived.set(e.groupId, { envelope: e, scored: scored.value, msg: pulled.msg })
  })

/** Requeues held results that have grown staler than `maxStaleness` since they arrived. */
const sweepStale = (s: State, maxStaleness: number, requeued: Array<number>) =>
  Effect.forEach([...s.arrived.values()], (a) => {
    if ((s.version ?? 0) - a.envelope.policyVersion <= maxStaleness) return Effect.void
    s.arrived.delete(a.envelope.groupId)
    requeued.push(a.envelope.groupId)
    const o = s.outstanding.get(a.envelope.groupId)!
    return Effect.andThen(discard(s, { envelope: a.envelope, msg: a.msg }), requeue(s, o))
  }, { discard: true })

/** The results ready to hand over: the head of the publish order that has arrived, or any that arrived. */
const ready = (s: State, n: number, order: "group" | "arrival"): Array<Arrived> => {
  if (order === "arrival") return [...s.arrived.values()].slice(0, n)
  const out: Array<Arrived> = []
  for (const o of [...s.outstanding.values()].sort((a, b) => a.order - b.order)) {
    const a = s.arrived.get(o.groupId)
    if (a === undefined || out.length === n) break
    out.push(a)
  }
  return out
}

/** Hands `taken` over: acks their results and purges their frames, and they stop being outstanding. */
const handOver = (s: State, taken: ReadonlyArray<Arrived>): Effect.Effect<Array<Collected>, Connection.ConnectionError> =>
  Effect.forEach(taken, (a) =>
    Effect.gen(function*() {
      const o = s.outstanding.get(a.envelope.groupId)!
      yield* s.q.ack(a.msg)
      yield* s.q.drop(a.envelope.messageId)
      yield* s.q.drop(o.taskMessageId)
      s.outstanding.delete(o.groupId)
      s.arrived.delete(o.groupId)
      const e = a.envelope
      return { groupId: e.groupId, seed: e.seed, policyVersion: e.policyVersion, staleness: (s.version ?? 0) - e.policyVersion, workerId: e.workerId, drawMs: e.drawMs, scored: a.scored }
    }))

const undeliverable = (s: State) => {
  const lost = [...s.outstanding.values()].filter((o) => s.exhausted.has(o.taskSeq) && !s.arrived.has(o.groupId))
  return lost.length === 0 ? Effect.void : Effect.fail(new TrainerError({
    runId: s.q.runId, reason: "Undeliverable",
    message: `run ${s.q.runId}: group(s) ${lost.map((o) => o.groupId).join(", ")} were delivered ${s.q.maxDeliver} times without an ack; JetStream stopped redelivering them (see the workers' logs)`
  }))
}

const collectN = (s: State, n: number, options: CollectOptions) =>
  Effect.gen(function*() {
    const want = Math.min(n, s.outstanding.size)
    const order = options.order ?? "group"
    const tally = { duplicates: 0, refused: 0 }
    const requeued: Array<number> = []
    const deadline = options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs
    while (true) {
      yield* sweepStale(s, options.maxStaleness, requeued)
      const taken = ready(s, want, order)
      if (taken.length === want) return { results: yield* handOver(s, taken), requeued, ...tally } satisfies Collection
      yield* undeliverable(s)
      if (Date.now() > deadline) return yield* new TrainerError({ runId: s.q.runId, reason: "Timeout", message: `run ${s.q.runId}: ${taken.length} of ${want} results after ${options.timeoutMs} ms` })
      const pulled = yield* s.q.nextResult(1000)
      if (Option.isSome(pulled)) yield* receive(s, pulled.value, tally)
    }
  })

/** Listens for max_deliver advisories of the run's task consumer, until the scope closes. */
const watchExhausted = (nc: NatsConnection, runId: string, exhausted: Set<number>) =>
  Effect.acquireRelease(
    Effect.sync(() => nc.subscribe(`$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${Queues.names(runId).tasks}.${Queues.names(runId).workers}`, {
      callback: (err, m) => {
        if (err !== null) return
        const seq = (m.json() as { stream_seq?: unknown }).stream_seq
        if (typeof seq === "number") exhausted.add(seq)
      }
    })),
    (sub) => Effect.sync(() => sub.unsubscribe())
  )

/** The trainer of `options.runId`: creates the queues, announces its fingerprint to workers. */
export const make = (nc: NatsConnection, options: Options): Effect.Effect<Trainer, Connection.ConnectionError, Scope.Scope> =>
  Effect.gen(function*() {
    const store = yield* Weights.store(nc, options.runId)
    const q = yield* Queues.make(nc, options)
    yield* Connection.retrying(Connection.call(nc, `put ${Worker.fingerprintKey(options.runId)}`, () => store.kv.put(Worker.fingerprintKey(options.runId), options.fingerprint)))
    const s: State = { q, store, fingerprint: options.fingerprint, session: nuid.next(), version: undefined, manifest: undefined, outstanding: new Map(), arrived: new Map(), exhausted: new Set(), order: 0 }
    yield* watchExhausted(nc, options.runId, s.exhausted)
    return {
      runId: options.runId,
      session: s.session,
      version: () => s.version,
      publishWeights: (version, tensors) =>
        Effect.map(Weights.publish(store, version, tensors, s.manifest, s.session), (m) => {
          s.manifest = m
          s.version = version
        }),
      publish: (groups) => publishGroups(s, groups),
      collect: (n, o) => collectN(s, n, o),
      outstanding: () => s.outstanding.size
    }
  })
