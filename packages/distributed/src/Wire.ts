/**
 * Arrow IPC record batches as NATS messages. One batch is serialised as an Arrow IPC stream, then cut into
 * frames that each fit the server's `max_payload` (NATS refuses anything bigger). Every frame carries a
 * header naming its message, its place and both checksums, so reassembly can refuse a corrupt, missing or
 * foreign frame by name instead of handing a damaged batch to the trainer.
 *
 *   frame = "R1W1" | u32 BE header length | header JSON | body bytes
 */
import { createHash } from "node:crypto"
import { Stage } from "@r1flow/core"
import { RecordBatch, RecordBatchStreamWriter, tableFromIPC, type Schema as ArrowSchema, type TypeMap } from "apache-arrow"
import { Effect, Schema } from "effect"

/** A message could not be reassembled or decoded; `messageId` names it. */
export class WireError extends Schema.TaggedError<WireError>()("WireError", {
  messageId: Schema.String,
  reason: Schema.Literals(["Corrupt", "Missing", "Foreign", "Arrow", "Schema", "TooSmall"]),
  message: Schema.String
}) {}

/** The header of one frame. */
export const Header = Schema.Struct({
  /** The message this frame belongs to. */
  id: Schema.String,
  index: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  count: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)),
  /** Bytes of the whole message body. */
  total: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  /** sha256 (hex) of the whole message body. */
  sha256: Schema.String,
  /** sha256 (hex) of this frame's body. */
  chunkSha256: Schema.String
})
/** A frame header's fields. */
export type Header = typeof Header.Type

const MAGIC = new TextEncoder().encode("R1W1")
const decodeHeader = Schema.decodeUnknownEffect(Schema.fromJsonString(Header))

/**
 * Room kept in each message for the frame header and the NATS headers (`Nats-Msg-Id` and the like), which
 * count against `max_payload` too.
 */
export const RESERVED_BYTES = 1024

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex")

/** The Arrow IPC stream bytes of one record batch. */
export const toIpc = (batch: RecordBatch): Uint8Array => RecordBatchStreamWriter.writeAll([batch]).toUint8Array(true)

const frame = (header: Header, body: Uint8Array): Uint8Array => {
  const h = new TextEncoder().encode(JSON.stringify(header))
  const out = new Uint8Array(8 + h.length + body.length)
  out.set(MAGIC, 0)
  new DataView(out.buffer).setUint32(4, h.length)
  out.set(h, 8)
  out.set(body, 8 + h.length)
  return out
}

/** Cuts `body` into frames of at most `maxPayload` bytes each, all named `messageId`. */
export const frames = (messageId: string, body: Uint8Array, maxPayload: number): Effect.Effect<Array<Uint8Array>, WireError> =>
  Effect.gen(function*() {
    const size = maxPayload - RESERVED_BYTES - messageId.length
    if (size < 256) {
      return yield* new WireError({ messageId, reason: "TooSmall", message: `message ${messageId}: max_payload ${maxPayload} leaves no room for a frame (needs > ${RESERVED_BYTES + 256 + messageId.length} bytes)` })
    }
    const count = Math.max(1, Math.ceil(body.length / size))
    const whole = sha256(body)
    return Array.from({ length: count }, (_, index) => {
      const part = body.subarray(index * size, Math.min(body.length, (index + 1) * size))
      return frame({ id: messageId, index, count, total: body.length, sha256: whole, chunkSha256: sha256(part) }, part)
    })
  })

/** `batch` as Arrow IPC frames under `maxPayload` (`Connection.maxPayload` of the connection that sends them). */
export const encode = (batch: RecordBatch, options: { readonly messageId: string; readonly maxPayload: number }): Effect.Effect<Array<Uint8Array>, WireError> =>
  Effect.suspend(() => frames(options.messageId, toIpc(batch), options.maxPayload))

const fail = (messageId: string, reason: WireError["reason"], detail: string) =>
  Effect.fail(new WireError({ messageId, reason, message: `message ${messageId}: ${detail}` }))

/** The header and body of one frame; a frame with a bad magic, header or checksum is `Corrupt`. */
export const parseFrame = (messageId: string, bytes: Uint8Array): Effect.Effect<{ readonly header: Header; readonly body: Uint8Array }, WireError> =>
  Effect.gen(function*() {
    if (bytes.length < 8 || MAGIC.some((b, i) => bytes[i] !== b)) return yield* fail(messageId, "Corrupt", "a frame does not start with the r1flow wire magic")
    const length = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(4)
    if (8 + length > bytes.length) return yield* fail(messageId, "Corrupt", `a frame's header length ${length} runs past its ${bytes.length} bytes`)
    const header = yield* decodeHeader(new TextDecoder().decode(bytes.subarray(8, 8 + length))).pipe(
      Effect.catch((e) => fail(messageId, "Corrupt", `a frame header does not parse: ${e.message}`))
    )
    if (header.id !== messageId) return yield* fail(messageId, "Foreign", `frame ${header.index} belongs to message ${header.id}`)
    const body = bytes.subarray(8 + length)
    if (sha256(body) !== header.chunkSha256) return yield* fail(messageId, "Corrupt", `frame ${header.index + 1}/${header.count} fails its sha256 check`)
    return { header, body }
  })

/** Reassembles the body of `messageId` from its frames (any order); a missing, repeated or damaged frame fails. */
export const reassemble = (messageId: string, parts: ReadonlyArray<Uint8Array>): Effect.Effect<Uint8Array, WireError> =>
  Effect.gen(function*() {
    if (parts.length === 0) return yield* fail(messageId, "Missing", "all frames missing")
    const parsed = yield* Effect.forEach(parts, (p) => parseFrame(messageId, p))
    const { count, total, sha256: whole } = parsed[0].header
    const slots = Array.from<Uint8Array | undefined>({ length: count }) // dense: flatMap below skips holes
    for (const { header, body } of parsed) {
      if (header.count !== count || header.total !== total || header.sha256 !== whole || header.index >= count) {
        return yield* fail(messageId, "Corrupt", `frame ${header.index} disagrees with frame ${parsed[0].header.index} on the message's size or checksum`)
      }
      slots[header.index] = body
    }
    const missing = slots.flatMap((s, i) => (s === undefined ? [i + 1] : []))
    if (missing.length > 0) return yield* fail(messageId, "Missing", `frame(s) ${missing.join(", ")} of ${count} missing`)
    const out = new Uint8Array(total)
    let at = 0
    for (const s of slots as Array<Uint8Array>) {
      out.set(s, at)
      at += s.length
    }
    if (at !== total || sha256(out) !== whole) return yield* fail(messageId, "Corrupt", `reassembled body fails its sha256 check (${at} of ${total} bytes)`)
    return out
  })

/** One record batch from Arrow IPC stream bytes. */
export const fromIpc = (messageId: string, bytes: Uint8Array): Effect.Effect<RecordBatch, WireError> =>
  Effect.gen(function*() {
    const table = yield* Effect.try({
      try: () => tableFromIPC(bytes),
      catch: (cause) => new WireError({ messageId, reason: "Arrow", message: `message ${messageId}: not an Arrow IPC stream: ${String(cause)}` })
    })
    if (table.batches.length === 1) return table.batches[0]
    if (table.batches.length === 0) return new RecordBatch(table.schema)
    return yield* fail(messageId, "Arrow", `holds ${table.batches.length} record batches, expected one`)
  })

/**
 * The record batch in `parts`, checked against `schema` the way a stage checks its input
 * (`Stage.check`): a missing or mistyped column is a `WireError` naming the message and the column.
 */
export const decode = <T extends TypeMap>(messageId: string, parts: ReadonlyArray<Uint8Array>, schema: ArrowSchema<T>): Effect.Effect<RecordBatch<T>, WireError> =>
  Effect.gen(function*() {
    const batch = yield* fromIpc(messageId, yield* reassemble(messageId, parts))
    const problems = Stage.schemaProblems(schema, batch.schema)
    if (problems.length > 0) return yield* fail(messageId, "Schema", `does not match ${schema.metadata.get("r1flow.schema") ?? "the expected schema"}: ${problems.join("; ")}`)
    return batch as unknown as RecordBatch<T>
  })
