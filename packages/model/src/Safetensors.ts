/**
 * The safetensors file format (Hugging Face): an 8-byte little-endian header length N, N bytes of JSON
 * `{ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__"?: { string: string } }` (padded
 * with spaces to a multiple of 8), then the raw little-endian tensor bytes, offsets relative to the end
 * of the header.
 *
 * Reading validates everything a bad file could get wrong (lengths, JSON, dtypes, shapes against byte
 * counts, offsets inside the data) and fails with a `CheckpointError` naming the file and the tensor.
 * F16 and BF16 tensors are widened to float32 on read (HF checkpoints are often half precision).
 * Writing is atomic: a temp file in the same directory, then rename.
 */
import { Effect, Schema } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"

/** A checkpoint or safetensors file could not be read or written. `tensor` names the tensor at fault. */
export class CheckpointError extends Schema.TaggedError<CheckpointError>()("CheckpointError", {
  path: Schema.String,
  tensor: Schema.optional(Schema.String),
  message: Schema.String
}) {}

/** Element types this reader understands (F16/BF16 are widened to float32). */
export type DType = "F32" | "F16" | "BF16" | "I32" | "I64" | "U8"

/** A tensor as stored: its dtype, shape and values (float types as Float32Array after reading). */
export interface Entry {
  readonly dtype: DType
  readonly shape: ReadonlyArray<number>
  readonly data: Float32Array | Int32Array | BigInt64Array | Uint8Array | Uint16Array
}

const bytesPer: Record<DType, number> = { F32: 4, F16: 2, BF16: 2, I32: 4, I64: 8, U8: 1 }

const sizeOf = (shape: ReadonlyArray<number>) => shape.reduce((a, b) => a * b, 1)

/** Serialises `tensors` (in key order) with optional string metadata. */
export const encode = (tensors: Record<string, Entry>, metadata?: Record<string, string>): Uint8Array => {
  const header: Record<string, unknown> = {}
  if (metadata !== undefined) header.__metadata__ = metadata
  let offset = 0
  const names = Object.keys(tensors)
  for (const name of names) {
    const t = tensors[name]
    const n = t.data.byteLength
    if (n !== sizeOf(t.shape) * bytesPer[t.dtype]) throw new RangeError(`tensor ${name}: ${n} bytes for ${t.dtype} [${t.shape}]`)
    header[name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + n] }
    offset += n
  }
  let json = Buffer.from(JSON.stringify(header), "utf8")
  const pad = (8 - (json.length % 8)) % 8
  if (pad > 0) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)])
  const out = new Uint8Array(8 + json.length + offset)
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true)
  out.set(json, 8)
  let at = 8 + json.length
  for (const name of names) {
    const d = tensors[name].data
    out.set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength), at)
    at += d.byteLength
  }
  return out
}

const f16ToF32 = (h: number): number => {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff
  if (e === 0) return s * f * 2 ** -24
  if (e === 31) return f === 0 ? s * Infinity : NaN
  return s * (1 + f / 1024) * 2 ** (e - 15)
}

/** Parses safetensors bytes; `file` is only used in error messages. Throws `CheckpointError`. */
export const decode = (bytes: Uint8Array, file: string): { tensors: Record<string, Entry>; metadata: Record<string, string> } => {
  const fail = (message: string, tensor?: string): never => {
    throw new CheckpointError({ path: file, message, ...(tensor === undefined ? {} : { tensor }) })
  }
  if (bytes.length < 8) fail(`not a safetensors file: ${bytes.length} bytes, shorter than the 8-byte header length`)
  const n = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true)
  if (n > BigInt(bytes.length - 8)) fail(`bad header: header length ${n} exceeds the file's ${bytes.length - 8} remaining bytes`)
  const headerLength = Number(n)
  let header: unknown
  try {
    header = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset + 8, headerLength).toString("utf8"))
  } catch (e) {
    return fail(`bad header: not JSON (${e instanceof Error ? e.message : String(e)})`)
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) return fail("bad header: not a JSON object")
  const dataStart = 8 + headerLength
  const dataLength = bytes.length - dataStart
  const tensors: Record<string, Entry> = {}
  let metadata: Record<string, string> = {}
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      metadata = raw as Record<string, string>
      continue
    }
    const info = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown }
    if (info === null || typeof info !== "object") fail("bad header entry: not an object", name)
    const dtype = info.dtype
    if (typeof dtype !== "string" || !(dtype in bytesPer)) fail(`unsupported dtype ${JSON.stringify(dtype)} (supported: ${Object.keys(bytesPer).join(", ")})`, name)
    const shape = info.shape
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) fail(`bad shape ${JSON.stringify(shape)}`, name)
    const offs = info.data_offsets
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isInteger(o) && o >= 0) || offs[0] > offs[1]) {
      fail(`bad data_offsets ${JSON.stringify(offs)}`, name)
    }
    const [begin, end] = offs as [number, number]
    const dt = dtype as DType, sh = shape as Array<number>
    const count = sizeOf(sh)
    if (end - begin !== count * bytesPer[dt]) fail(`data_offsets [${begin}, ${end}] hold ${end - begin} bytes; ${dt} [${sh}] needs ${count * bytesPer[dt]}`, name)
    if (end > dataLength) fail(`data_offsets end ${end} is past the end of the data (${dataLength} bytes; file truncated?)`, name)
    // Copy out: the file buffer's offset need not be aligned for typed-array views.
    const chunk = new Uint8Array(bytes.subarray(dataStart + begin, dataStart + end)).buffer
    let data: Entry["data"]
    switch (dt) {
      case "F32": data = new Float32Array(chunk); break
      case "I32": data = new Int32Array(chunk); break
      case "I64": data = new BigInt64Array(chunk); break
      case "U8": data = new Uint8Array(chunk); break
      case "F16": {
        const h = new Uint16Array(chunk), f = new Float32Array(count)
        for (let i = 0; i < count; i++) f[i] = f16ToF32(h[i])
        data = f
        break
      }
      case "BF16": {
        const h = new Uint16Array(chunk), u = new Uint32Array(count)
        for (let i = 0; i < count; i++) u[i] = h[i] << 16
        data = new Float32Array(u.buffer)
        break
      }
    }
    tensors[name] = { dtype: dt, shape: sh, data }
  }
  return { tensors, metadata }
}

/** Writes `bytes` to `file` atomically: a temp file beside it, flushed, then renamed over it. */
export const writeAtomic = (file: string, bytes: Uint8Array | string): Effect.Effect<void, CheckpointError> =>
  Effect.tryPromise({
    try: async () => {
      await fs.mkdir(path.dirname(file), { recursive: true })
      const tmp = `${file}.tmp-${process.pid}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`
      const handle = await fs.open(tmp, "w")
      try {
        await handle.writeFile(bytes)
        await handle.sync()
      } finally {
        await handle.close()
      }
      try {
        await fs.rename(tmp, file)
      } catch (e) {
        await fs.rm(tmp, { force: true })
        throw e
      }
    },
    catch: (e) => new CheckpointError({ path: file, message: `cannot write: ${e instanceof Error ? e.message : String(e)}` })
  })

/** Writes tensors (and string metadata) to a safetensors file, atomically. */
export const write = (file: string, tensors: Record<string, Entry>, metadata?: Record<string, string>): Effect.Effect<void, CheckpointError> =>
  Effect.try({
    try: () => encode(tensors, metadata),
    catch: (e) => (e instanceof CheckpointError ? e : new CheckpointError({ path: file, message: e instanceof Error ? e.message : String(e) }))
  }).pipe(Effect.flatMap((bytes) => writeAtomic(file, bytes)))

/** Reads and validates a safetensors file. */
export const read = (file: string): Effect.Effect<{ tensors: Record<string, Entry>; metadata: Record<string, string> }, CheckpointError> =>
  Effect.tryPromise({
    try: () => fs.readFile(file),
    catch: (e) => new CheckpointError({ path: file, message: `cannot read: ${e instanceof Error ? e.message : String(e)}` })
  }).pipe(
    Effect.flatMap((bytes) =>
      Effect.try({
        try: () => decode(bytes, file),
        catch: (e) => (e instanceof CheckpointError ? e : new CheckpointError({ path: file, message: String(e) }))
      })
    )
  )
