/**
 * The safetensors file format (Hugging Face): an 8-byte little-endian header length N, N bytes of JSON
 * `{ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__"?: { string: string } }` (padded
 * with spaces to a multiple of 8), then the raw little-endian tensor bytes, offsets relative to the end
 * of the header.
 *
 * Files are read by positioned reads on a file handle: the header first (`readHeader`, validated against
 * the file's size: lengths, JSON, dtypes, shapes against byte counts, offsets inside the data), then one
 * tensor at a time in chunks (`withReader`), so a checkpoint of any size loads without ever holding a whole
 * file in one buffer (Node refuses buffers over 2 GiB). Every failure is a `CheckpointError` naming the
 * file and the tensor. F16 and BF16 tensors are widened to float32 on read; `writeFile` narrows float32 to
 * F16 / BF16 with round-to-nearest-even, one tensor at a time. Writing is atomic: a temp file in the same
 * directory, flushed, then renamed.
 */
import { Effect, Schema } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"

/**
 * A checkpoint or safetensors file could not be read or written. `tensor` names the tensor at fault, `key`
 * the JSON key (in `config.json`, an index); `describe` puts all of it on one line.
 */
export class CheckpointError extends Schema.TaggedError<CheckpointError>()("CheckpointError", {
  path: Schema.String,
  tensor: Schema.optional(Schema.String),
  key: Schema.optional(Schema.String),
  message: Schema.String
}) {}

/** One line: `<path>: tensor <name>: <message>` / `<path>: key <key>: <message>`. */
export const describe = (e: CheckpointError): string =>
  `${e.path}: ${e.tensor === undefined ? "" : `tensor ${e.tensor}: `}${e.key === undefined ? "" : `key ${e.key}: `}${e.message}`.replace(/\s*\n\s*/g, " ")

/** Element types this reader understands (F16/BF16 are widened to float32). */
export type DType = "F32" | "F16" | "BF16" | "I32" | "I64" | "U8"

/** The float dtypes a model's weights may be stored in. */
export type FloatDType = "F32" | "F16" | "BF16"

/** A tensor as stored: its dtype, shape and values (float types as Float32Array after reading). */
export interface Entry {
  readonly dtype: DType
  readonly shape: ReadonlyArray<number>
  readonly data: Float32Array | Int32Array | BigInt64Array | Uint8Array | Uint16Array
}

/** Where one tensor lies in its file. `offset` is absolute (header included). */
export interface TensorInfo {
  readonly name: string
  readonly dtype: DType
  readonly shape: ReadonlyArray<number>
  readonly offset: number
  readonly byteLength: number
}

/** A file's validated header. */
export interface Header {
  readonly file: string
  readonly metadata: Record<string, string>
  /** In header order. */
  readonly tensors: ReadonlyMap<string, TensorInfo>
}

/** Bytes per element of each dtype. */
export const bytesPer: Record<DType, number> = { F32: 4, F16: 2, BF16: 2, I32: 4, I64: 8, U8: 1 }

const sizeOf = (shape: ReadonlyArray<number>) => shape.reduce((a, b) => a * b, 1)

const message = (e: unknown) => (e instanceof Error ? e.message : String(e))

/** At most this many bytes per positioned read (reads stay far from Node's 2 GiB limit). */
const CHUNK = 64 * 1024 * 1024

// ---------------------------------------------------------------------------------------------------
// Half precision.

/** IEEE binary16 bits → number. */
export const f16ToF32 = (h: number): number => {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff
  if (e === 0) return s * f * 2 ** -24
  if (e === 31) return f === 0 ? s * Infinity : NaN
  return s * (1 + f / 1024) * 2 ** (e - 15)
}

const f32 = new Float32Array(1)
const u32 = new Uint32Array(f32.buffer)

/** float32 → binary16 bits, round to nearest even (overflow → ±∞, NaN stays NaN). */
export const f32ToF16 = (x: number): number => {
  f32[0] = x
  const u = u32[0], sign = (u >>> 16) & 0x8000, e = (u >>> 23) & 0xff, m = u & 0x7fffff
  if (e === 255) return sign | 0x7c00 | (m !== 0 ? 0x200 : 0)
  const exp = e - 127 + 15
  if (exp >= 31) return sign | 0x7c00
  if (exp >= 1) {
    // A carry out of the mantissa moves into the exponent, up to ∞: exactly IEEE rounding.
    const q = (exp << 10) | (m >>> 13), rem = m & 0x1fff
    return sign | (rem > 0x1000 || (rem === 0x1000 && (q & 1) === 1) ? q + 1 : q)
  }
  if (exp < -10) return sign
  const full = m | 0x800000, shift = 14 - exp, q = full >>> shift, rem = full & ((1 << shift) - 1), half = 1 << (shift - 1)
  return sign | (rem > half || (rem === half && (q & 1) === 1) ? q + 1 : q)
}

/** float32 → bfloat16 bits, round to nearest even (as torch's `.to(torch.bfloat16)`); NaN stays NaN. */
export const f32ToBf16 = (x: number): number => {
  f32[0] = x
  const u = u32[0]
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x7fffff) !== 0) return ((u >>> 16) & 0x8000) | 0x7fc0
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff
}

/** `values` as the bytes of `dtype` (F32 shares the buffer). */
export const narrow = (values: Float32Array, dtype: FloatDType): Uint8Array => {
  if (dtype === "F32") return new Uint8Array(values.buffer, values.byteOffset, values.byteLength)
  const out = new Uint16Array(values.length), to = dtype === "F16" ? f32ToF16 : f32ToBf16
  for (let i = 0; i < values.length; i++) out[i] = to(values[i])
  return new Uint8Array(out.buffer)
}

/** Widens `count` elements of `dtype` in `bytes` (aligned) into `out` from index `at`. */
const widenInto = (bytes: Uint8Array, dtype: "F16" | "BF16", out: Float32Array, at: number) => {
  const h = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2)
  if (dtype === "BF16") {
    const u = new Uint32Array(out.buffer, out.byteOffset + at * 4, h.length)
    for (let i = 0; i < h.length; i++) u[i] = h[i] << 16
  } else {
    for (let i = 0; i < h.length; i++) out[at + i] = f16ToF32(h[i])
  }
}

// ---------------------------------------------------------------------------------------------------
// Header.

/**
 * Validates a parsed header of a file of `fileSize` bytes whose data starts at `dataStart`. Throws
 * `CheckpointError` naming the file and tensor.
 */
export const parseHeader = (header: unknown, dataStart: number, fileSize: number, file: string): Header => {
  const fail = (msg: string, tensor?: string): never => {
    throw new CheckpointError({ path: file, message: msg, ...(tensor === undefined ? {} : { tensor }) })
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) return fail("bad header: not a JSON object")
  const dataLength = fileSize - dataStart
  const tensors = new Map<string, TensorInfo>()
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
    const need = sizeOf(sh) * bytesPer[dt]
    if (end - begin !== need) fail(`data_offsets [${begin}, ${end}] hold ${end - begin} bytes; ${dt} [${sh}] needs ${need}`, name)
    if (end > dataLength) fail(`data_offsets end ${end} is past the end of the data (${dataLength} bytes; file truncated?)`, name)
    tensors.set(name, { name, dtype: dt, shape: sh, offset: dataStart + begin, byteLength: need })
  }
  return { file, metadata, tensors }
}

/** Parses safetensors bytes held in memory; `file` is only used in error messages. Throws `CheckpointError`. */
export const decode = (bytes: Uint8Array, file: string): { tensors: Record<string, Entry>; metadata: Record<string, string> } => {
  const fail = (msg: string): never => {
    throw new CheckpointError({ path: file, message: msg })
  }
  if (bytes.length < 8) fail(`not a safetensors file: ${bytes.length} bytes, shorter than the 8-byte header length`)
  const n = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true)
  if (n > BigInt(bytes.length - 8)) fail(`bad header: header length ${n} exceeds the file's ${bytes.length - 8} remaining bytes`)
  const header = parseHeader(parseJson(Buffer.from(bytes.buffer, bytes.byteOffset + 8, Number(n)), file), 8 + Number(n), bytes.length, file)
  const tensors: Record<string, Entry> = {}
  for (const t of header.tensors.values()) {
    // Copied out: the tensor's offset in `bytes` need not be aligned for typed-array views.
    tensors[t.name] = toEntry(t, new Uint8Array(bytes.subarray(t.offset, t.offset + t.byteLength)))
  }
  return { tensors, metadata: header.metadata }
}

const parseJson = (bytes: Uint8Array, file: string): unknown => {
  try {
    return JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("utf8"))
  } catch (e) {
    throw new CheckpointError({ path: file, message: `bad header: not JSON (${message(e)})` })
  }
}

/** A tensor's raw (aligned, owned) bytes as an `Entry`, floats widened. */
const toEntry = (t: TensorInfo, raw: Uint8Array): Entry => {
  const b = raw.buffer as ArrayBuffer
  switch (t.dtype) {
    case "F32": return { dtype: t.dtype, shape: t.shape, data: new Float32Array(b, raw.byteOffset, raw.byteLength / 4) }
    case "I32": return { dtype: t.dtype, shape: t.shape, data: new Int32Array(b, raw.byteOffset, raw.byteLength / 4) }
    case "I64": return { dtype: t.dtype, shape: t.shape, data: new BigInt64Array(b, raw.byteOffset, raw.byteLength / 8) }
    case "U8": return { dtype: t.dtype, shape: t.shape, data: raw }
    case "F16":
    case "BF16": {
      const out = new Float32Array(raw.byteLength / 2)
      widenInto(raw, t.dtype, out, 0)
      return { dtype: t.dtype, shape: t.shape, data: out }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Reading by positioned reads.

/** An open safetensors file: its header and one-tensor-at-a-time reads. */
export interface Reader {
  readonly header: Header
  /** One tensor as stored (floats widened to float32). */
  readonly tensor: (name: string) => Effect.Effect<Entry, CheckpointError>
  /** One float tensor as float32, read chunk by chunk straight into the result. */
  readonly floats: (name: string) => Effect.Effect<Float32Array, CheckpointError>
}

const readExactly = async (handle: fs.FileHandle, into: Uint8Array, position: number): Promise<number> => {
  let done = 0
  while (done < into.length) {
    const { bytesRead } = await handle.read(into, done, into.length - done, position + done)
    if (bytesRead === 0) break
    done += bytesRead
  }
  return done
}

const openHandle = (file: string) =>
  Effect.tryPromise({
    try: () => fs.open(file, "r"),
    catch: (e) => new CheckpointError({ path: file, message: `cannot open: ${message(e)}` })
  })

const headerOf = (handle: fs.FileHandle, file: string): Effect.Effect<Header, CheckpointError> =>
  Effect.tryPromise({
    try: async () => {
      const { size } = await handle.stat()
      if (size < 8) throw new CheckpointError({ path: file, message: `not a safetensors file: ${size} bytes, shorter than the 8-byte header length` })
      const len = new Uint8Array(8)
      await readExactly(handle, len, 0)
      const n = new DataView(len.buffer).getBigUint64(0, true)
      if (n > BigInt(size - 8)) throw new CheckpointError({ path: file, message: `bad header: header length ${n} exceeds the file's ${size - 8} remaining bytes` })
      const json = new Uint8Array(Number(n))
      if (await readExactly(handle, json, 8) !== json.length) throw new CheckpointError({ path: file, message: "bad header: file shrank while reading" })
      return parseHeader(parseJson(json, file), 8 + json.length, size, file)
    },
    catch: (e) => (e instanceof CheckpointError ? e : new CheckpointError({ path: file, message: `cannot read: ${message(e)}` }))
  })

const makeReader = (handle: fs.FileHandle, header: Header): Reader => {
  const file = header.file
  const info = (name: string): Effect.Effect<TensorInfo, CheckpointError> => {
    const t = header.tensors.get(name)
    return t === undefined ? Effect.fail(new CheckpointError({ path: file, tensor: name, message: "tensor is missing" })) : Effect.succeed(t)
  }
  const short = (t: TensorInfo, got: number) =>
    new CheckpointError({ path: file, tensor: t.name, message: `read ${got} of ${t.byteLength} bytes at offset ${t.offset} (file truncated?)` })
  const tryRead = <A>(t: TensorInfo, run: () => Promise<A>) =>
    Effect.tryPromise({
      try: run,
      catch: (e) => (e instanceof CheckpointError ? e : new CheckpointError({ path: file, tensor: t.name, message: `cannot read: ${message(e)}` }))
    })
  return {
    header,
    tensor: (name) =>
      Effect.flatMap(info(name), (t) =>
        tryRead(t, async () => {
          const raw = new Uint8Array(t.byteLength)
          for (let at = 0; at < raw.length; at += CHUNK) {
            const part = raw.subarray(at, Math.min(raw.length, at + CHUNK))
            const got = await readExactly(handle, part, t.offset + at)
            if (got !== part.length) throw short(t, at + got)
          }
          return toEntry(t, raw)
        })),
    floats: (name) =>
      Effect.flatMap(info(name), (t) => {
        if (t.dtype !== "F32" && t.dtype !== "F16" && t.dtype !== "BF16") {
          return Effect.fail(new CheckpointError({ path: file, tensor: name, message: `dtype ${t.dtype} is not a float type (F32, F16, BF16)` }))
        }
        const dtype = t.dtype
        return tryRead(t, async () => {
          const out = new Float32Array(t.byteLength / bytesPer[dtype])
          const bytes = new Uint8Array(out.buffer)
          // F32 lands in place; half types go through one chunk-sized buffer and are widened chunk by chunk.
          const scratch = dtype === "F32" ? undefined : new Uint8Array(Math.min(CHUNK, t.byteLength))
          for (let at = 0; at < t.byteLength; at += CHUNK) {
            const n = Math.min(CHUNK, t.byteLength - at)
            const part = scratch === undefined ? bytes.subarray(at, at + n) : scratch.subarray(0, n)
            const got = await readExactly(handle, part, t.offset + at)
            if (got !== n) throw short(t, at + got)
            if (dtype !== "F32") widenInto(part, dtype, out, at / 2)
          }
          return out
        })
      })
  }
}

/** Opens `file`, validates its header, runs `use` with a `Reader`, and closes the file whatever happens. */
export const withReader = <A, E>(file: string, use: (reader: Reader) => Effect.Effect<A, E>): Effect.Effect<A, E | CheckpointError> =>
  Effect.acquireUseRelease(
    openHandle(file),
    (handle) => Effect.flatMap(headerOf(handle, file), (header) => use(makeReader(handle, header))),
    (handle) => Effect.promise(() => handle.close())
  )

/** Reads and validates only the header of `file`. */
export const readHeader = (file: string): Effect.Effect<Header, CheckpointError> => withReader(file, (r) => Effect.succeed(r.header))

/** Reads and validates a whole safetensors file, tensor by tensor. */
export const read = (file: string): Effect.Effect<{ tensors: Record<string, Entry>; metadata: Record<string, string> }, CheckpointError> =>
  withReader(file, (r) =>
    Effect.gen(function*() {
      const tensors: Record<string, Entry> = {}
      for (const name of r.header.tensors.keys()) tensors[name] = yield* r.tensor(name)
      return { tensors, metadata: r.header.metadata }
    }))

// ---------------------------------------------------------------------------------------------------
// Writing.

/** A tensor to write: its dtype and shape, and its bytes made only when they are written. */
export interface Source {
  readonly name: string
  readonly dtype: DType
  readonly shape: ReadonlyArray<number>
  /** May be async: a tensor on a GPU is read back with `data()`. */
  readonly bytes: () => Uint8Array | Promise<Uint8Array>
}

/** The header bytes (length prefix included) for `sources` laid out in order. */
const headerBytes = (sources: ReadonlyArray<Source>, metadata: Record<string, string> | undefined): Uint8Array => {
  const header: Record<string, unknown> = {}
  if (metadata !== undefined) header.__metadata__ = metadata
  let offset = 0
  for (const t of sources) {
    const n = sizeOf(t.shape) * bytesPer[t.dtype]
    header[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + n] }
    offset += n
  }
  let json = Buffer.from(JSON.stringify(header), "utf8")
  const pad = (8 - (json.length % 8)) % 8
  if (pad > 0) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)])
  const out = new Uint8Array(8 + json.length)
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true)
  out.set(json, 8)
  return out
}

const entrySource = (name: string, t: Entry): Omit<Source, "bytes"> & { readonly bytes: () => Uint8Array } => {
  const n = t.data.byteLength
  if (n !== sizeOf(t.shape) * bytesPer[t.dtype]) throw new RangeError(`tensor ${name}: ${n} bytes for ${t.dtype} [${t.shape}]`)
  return { name, dtype: t.dtype, shape: t.shape, bytes: () => new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) }
}

/** Serialises `tensors` (in key order) with optional string metadata, in memory. */
export const encode = (tensors: Record<string, Entry>, metadata?: Record<string, string>): Uint8Array => {
  const sources = Object.entries(tensors).map(([name, t]) => entrySource(name, t))
  const head = headerBytes(sources, metadata)
  const out = new Uint8Array(head.length + sources.reduce((n, t) => n + sizeOf(t.shape) * bytesPer[t.dtype], 0))
  out.set(head, 0)
  let at = head.length
  for (const t of sources) {
    const b = t.bytes()
    out.set(b, at)
    at += b.length
  }
  return out
}

const writeAll = async (handle: fs.FileHandle, bytes: Uint8Array) => {
  for (let at = 0; at < bytes.length;) {
    const { bytesWritten } = await handle.write(bytes, at, Math.min(CHUNK, bytes.length - at))
    at += bytesWritten
  }
}

/** Writes to a temp file beside `file` with `fill`, flushes, then renames it over `file`. */
const atomically = (file: string, fill: (handle: fs.FileHandle) => Promise<void>): Effect.Effect<void, CheckpointError> =>
  Effect.tryPromise({
    try: async () => {
      await fs.mkdir(path.dirname(file), { recursive: true })
      const tmp = `${file}.tmp-${process.pid}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`
      const handle = await fs.open(tmp, "w")
      try {
        await fill(handle)
        await handle.sync()
      } catch (e) {
        await handle.close()
        await fs.rm(tmp, { force: true })
        throw e
      }
      await handle.close()
      try {
        await fs.rename(tmp, file)
      } catch (e) {
        await fs.rm(tmp, { force: true })
        throw e
      }
    },
    catch: (e) => (e instanceof CheckpointError ? e : new CheckpointError({ path: file, message: `cannot write: ${message(e)}` }))
  })

/** Writes `bytes` to `file` atomically: a temp file beside it, flushed, then renamed over it. */
export const writeAtomic = (file: string, bytes: Uint8Array | string): Effect.Effect<void, CheckpointError> =>
  atomically(file, (handle) => handle.writeFile(bytes))

/**
 * Writes `sources` to a safetensors file atomically, one tensor's bytes at a time (each `bytes()` is called
 * once, when its turn comes, and checked against its dtype and shape).
 */
export const writeFile = (file: string, sources: ReadonlyArray<Source>, metadata?: Record<string, string>): Effect.Effect<void, CheckpointError> =>
  atomically(file, async (handle) => {
    await writeAll(handle, headerBytes(sources, metadata))
    for (const t of sources) {
      const b = await t.bytes(), need = sizeOf(t.shape) * bytesPer[t.dtype]
      if (b.length !== need) throw new CheckpointError({ path: file, tensor: t.name, message: `${b.length} bytes for ${t.dtype} [${t.shape}], which needs ${need}` })
      await writeAll(handle, b)
    }
  })

/** Writes tensors (and string metadata) to a safetensors file, atomically. */
export const write = (file: string, tensors: Record<string, Entry>, metadata?: Record<string, string>): Effect.Effect<void, CheckpointError> =>
  Effect.try({
    try: () => Object.entries(tensors).map(([name, t]) => entrySource(name, t)),
    catch: (e) => new CheckpointError({ path: file, message: message(e) })
  }).pipe(Effect.flatMap((sources) => writeFile(file, sources, metadata)))
