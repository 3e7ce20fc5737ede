/**
 * Policy weights by version. Each tensor is an object of the JetStream object store, a version is a
 * manifest object `weights/<runId>/<version>` listing its tensors with their sha256, and the current
 * version is the KV key `<runId>.version` (bucket `r1flow-runs`) that workers watch.
 *
 * Delta by tensor: a new version stores only the tensors whose sha256 changed and points the others at
 * the object of the version that last wrote them; a worker holding an older version fetches only the
 * tensors whose sha256 differs from what it has. Weights are named Float32Arrays so this layer does not
 * depend on tfjs; the engine maps them to and from its variables.
 *
 * A manifest names the trainer session that wrote it (`Trainer`: a fresh id per trainer process). A resumed
 * trainer publishes its versions again under the same numbers; a worker that holds a version of another
 * session fetches it again (only the tensors whose sha256 differ), so a task is never drawn with the
 * weights a killed trainer had under that number.
 */
import { createHash } from "node:crypto"
import { Kvm, type KV } from "@nats-io/kv"
import { Objm, type ObjectStore } from "@nats-io/obj"
import type { NatsConnection } from "@nats-io/transport-node"
import { Effect, Schema } from "effect"
import * as Connection from "./Connection.js"

/** Named tensors of a policy, in a stable order. */
export type Tensors = ReadonlyMap<string, Float32Array>

/** A version's weights are absent or damaged. */
export class WeightsError extends Schema.TaggedError<WeightsError>()("WeightsError", {
  runId: Schema.String,
  version: Schema.Number,
  reason: Schema.Literals(["Missing", "Corrupt"]),
  message: Schema.String
}) {}

/** One tensor of a version: where its bytes are and their sha256. */
export const Entry = Schema.Struct({ name: Schema.String, length: Schema.Int, sha256: Schema.String, object: Schema.String })

/** A version's manifest. */
export const Manifest = Schema.Struct({ runId: Schema.String, session: Schema.String, version: Schema.Int, tensors: Schema.Array(Entry) })
/** A version's manifest. */
export type Manifest = typeof Manifest.Type

/** Weights a worker holds: the manifest they came from and the tensors. */
export interface Held {
  readonly manifest: Manifest
  readonly tensors: Tensors
}

/** The object store and KV bucket of weights. */
export interface Store {
  readonly nc: NatsConnection
  readonly runId: string
  readonly objects: ObjectStore
  readonly kv: KV
}

/** Object store bucket of every run's weights. */
export const BUCKET = "r1flow-weights"
/** KV bucket of every run's current version and fingerprint. */
export const KV_BUCKET = "r1flow-runs"

/** Name of a version's manifest object. */
export const manifestName = (runId: string, version: number) => `weights/${runId}/${version}`
/** KV key of a run's current version. */
export const versionKey = (runId: string) => `${runId}.version`

const sha256 = (t: Float32Array) => createHash("sha256").update(new Uint8Array(t.buffer, t.byteOffset, t.byteLength)).digest("hex")
const decodeManifest = Schema.decodeUnknownEffect(Schema.fromJsonString(Manifest))

/** Opens (creating when absent) the weights buckets. */
export const store = (nc: NatsConnection, runId: string): Effect.Effect<Store, Connection.ConnectionError> =>
  Effect.gen(function*() {
    const objects = yield* Connection.retrying(Connection.call(nc, `object store ${BUCKET}`, () => new Objm(nc).create(BUCKET)))
    const kv = yield* Connection.retrying(Connection.call(nc, `kv ${KV_BUCKET}`, () => new Kvm(nc).create(KV_BUCKET, { history: 1 })))
    return { nc, runId, objects, kv }
  })

/**
 * Stores `tensors` as `version` of trainer session `session` (only those changed since `previous`, by
 * sha256) and makes it current. Returns the manifest, to pass as `previous` next time.
 */
export const publish = (s: Store, version: number, tensors: Tensors, previous: Manifest | undefined, session: string): Effect.Effect<Manifest, Connection.ConnectionError> =>
  Effect.gen(function*() {
    const before = new Map((previous?.tensors ?? []).map((e) => [e.name, e]))
    const entries = yield* Effect.forEach([...tensors], ([name, data]) => {
      const hash = sha256(data)
      const old = before.get(name)
      if (old !== undefined && old.sha256 === hash && old.length === data.length) return Effect.succeed(old)
      const object = `${manifestName(s.runId, version)}/${name}`
      const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
      return Effect.as(Connection.retrying(Connection.call(s.nc, `put ${object}`, () => s.objects.putBlob({ name: object }, bytes))), { name, length: data.length, sha256: hash, object })
    }, { concurrency: 4 })
    const manifest: Manifest = { runId: s.runId, session, version, tensors: entries }
    yield* Connection.retrying(Connection.call(s.nc, `put ${manifestName(s.runId, version)}`, () =>
      s.objects.putBlob({ name: manifestName(s.runId, version) }, new TextEncoder().encode(JSON.stringify(manifest)))))
    // The KV write comes last: a worker that sees the version can always read all of it.
    yield* Connection.retrying(Connection.call(s.nc, `put ${versionKey(s.runId)}`, () => s.kv.put(versionKey(s.runId), String(version))))
    return manifest
  })

const blob = (s: Store, version: number, name: string) =>
  Effect.flatMap(Connection.retrying(Connection.call(s.nc, `get ${name}`, () => s.objects.getBlob(name))), (bytes) =>
    bytes === null
      ? Effect.fail(new WeightsError({ runId: s.runId, version, reason: "Missing", message: `weights of run ${s.runId} version ${version}: object ${name} is absent` }))
      : Effect.succeed(bytes))

const tensorOf = (s: Store, version: number, e: typeof Entry.Type) =>
  Effect.flatMap(blob(s, version, e.object), (bytes) => {
    // Copy: the blob may be a Node Buffer view into a shared pool at an unaligned offset (its slice() is not
    // a copy), and the caller owns the result.
    const copy = new Uint8Array(bytes.length - (bytes.length % 4))
    copy.set(bytes.subarray(0, copy.length))
    const t = new Float32Array(copy.buffer)
    return t.length === e.length && sha256(t) === e.sha256
      ? Effect.succeed(t)
      : Effect.fail(new WeightsError({ runId: s.runId, version, reason: "Corrupt", message: `weights of run ${s.runId} version ${version}: tensor ${e.name} fails its sha256 check` }))
  })

/**
 * The weights of `version`. Tensors whose sha256 matches one in `held` are taken from it, not fetched;
 * `changed` names those that were fetched.
 */
export const fetch = (s: Store, version: number, held?: Held): Effect.Effect<Held & { readonly changed: ReadonlyArray<string> }, Connection.ConnectionError | WeightsError> =>
  Effect.gen(function*() {
    const raw = yield* blob(s, version, manifestName(s.runId, version))
    const manifest = yield* decodeManifest(new TextDecoder().decode(raw)).pipe(
      Effect.mapError((e) => new WeightsError({ runId: s.runId, version, reason: "Corrupt", message: `weights of run ${s.runId} version ${version}: manifest does not parse: ${e.message}` }))
    )
    const have = new Map((held?.manifest.tensors ?? []).map((e) => [e.name, e]))
    const changed: Array<string> = []
    const tensors = yield* Effect.forEach(manifest.tensors, (e) => {
      const old = have.get(e.name)
      const reuse = old !== undefined && old.sha256 === e.sha256 ? held?.tensors.get(e.name) : undefined
      if (reuse !== undefined) return Effect.succeed([e.name, reuse] as const)
      changed.push(e.name)
      return Effect.map(tensorOf(s, version, e), (t) => [e.name, t] as const)
    }, { concurrency: 4 })
    return { manifest, tensors: new Map(tensors), changed }
  })

/** The run's current version, or undefined before the trainer published any. */
export const current = (s: Store): Effect.Effect<number | undefined, Connection.ConnectionError> =>
  Effect.map(Connection.retrying(Connection.call(s.nc, `get ${versionKey(s.runId)}`, () => s.kv.get(versionKey(s.runId)))), (e) =>
    e === null || e.operation !== "PUT" ? undefined : Number(e.string()))

/**
 * Calls `onVersion` with each current version as the trainer publishes it (and the one current now);
 * runs until interrupted. A failing `onVersion` ends the watch with its error.
 */
export const watch = <E, R>(s: Store, onVersion: (version: number) => Effect.Effect<void, E, R>): Effect.Effect<void, E | Connection.ConnectionError, R> =>
  Effect.acquireUseRelease(
    Connection.retrying(Connection.call(s.nc, `watch ${versionKey(s.runId)}`, () => s.kv.watch({ key: versionKey(s.runId) }))),
    (iterator) =>
      Effect.gen(function*() {
        const it = iterator[Symbol.asyncIterator]()
        while (true) {
          const next = yield* Connection.call(s.nc, `watch ${versionKey(s.runId)}`, () => it.next())
          if (next.done === true) return
          if (next.value.operation === "PUT") yield* onVersion(Number(next.value.string()))
        }
      }),
    (iterator) => Effect.sync(() => iterator.stop())
  )
