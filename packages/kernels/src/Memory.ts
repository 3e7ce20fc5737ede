/**
 * Where a backend keeps tensor bytes, as the addon sees them: one interface over the two CPU backends the
 * native kernels serve, so each kernel is written once.
 *
 * - `wasm`: every tensor lives in the wasm32 heap (at most 4 GiB); the addon gets a view of the whole heap
 *   (`HEAPU8`) and byte offsets into it (`memoryOffset`), bounds-checked in C against the view.
 * - `cpu`: every tensor is its own JavaScript typed array (any size the process can allocate); the addon gets
 *   `null` for the heap and each array's address (`Addon.address`), so the same C entry points read the arrays
 *   in place. C cannot bound these, so `offset` checks here that the array holds the bytes its shape says.
 *
 * Outputs are allocated before `heap()` is read: a wasm allocation can grow (replace) the heap. On cpu the
 * output is a fresh zeroed `Float32Array` / `Int32Array` wrapped by `makeTensorInfo`; its bytes never move.
 */
import * as tf from "@tensorflow/tfjs"
import type { Addon } from "./Native.js"

/** The backends the native kernels are registered on. */
export type BackendName = "wasm" | "cpu"

/** A backend's tensor memory as the addon addresses it. */
export interface Memory {
  /** The addon's heap argument: the wasm heap view (read after allocating outputs), or `null` for addresses. */
  readonly heap: () => Uint8Array | null
  /** Where t's bytes start: a byte offset into `heap()`, or an address when `heap()` is null. */
  readonly offset: (t: tf.TensorInfo) => number
  /** A new tensor of shape and dtype (uninitialised on wasm, zeroed on cpu). */
  readonly output: (shape: ReadonlyArray<number>, dtype: tf.DataType) => tf.TensorInfo
  /**
   * A view of t's own data in elements of its dtype, to write (fills and copies done in JavaScript; elements,
   * not bytes, since V8 caps a typed array at 2³² elements and a cpu tensor may exceed 4 GiB).
   */
  readonly view: (t: tf.TensorInfo) => tf.TypedArray
}

/** The parts of the wasm backend used here (it keeps them public in JavaScript). */
export interface WasmBackend {
  readonly wasm: { readonly HEAPU8: Uint8Array }
  readonly dataIdMap: { get(dataId: unknown): { readonly memoryOffset: number } }
  makeOutput(shape: ReadonlyArray<number>, dtype: tf.DataType): tf.TensorInfo
}

/** The parts of the cpu backend used here. */
export interface CpuBackend {
  readonly data: { get(dataId: unknown): { values?: unknown } | undefined }
  makeTensorInfo(shape: Array<number>, dtype: tf.DataType, values?: tf.TypedArray): tf.TensorInfo
}

const arrayType = { float32: Float32Array, int32: Int32Array, bool: Uint8Array } as const

const wasmMemory = (be: WasmBackend): Memory => {
  const offset = (t: tf.TensorInfo) => be.dataIdMap.get(t.dataId).memoryOffset
  return {
    heap: () => be.wasm.HEAPU8,
    offset,
    output: (shape, dtype) => be.makeOutput(shape, dtype),
    view: (t) => new arrayType[t.dtype as keyof typeof arrayType](be.wasm.HEAPU8.buffer as ArrayBuffer, offset(t), tf.util.sizeFromShape(t.shape))
  }
}

/**
 * Copies of arrays held under another dtype's type, per original. The cpu backend's widening casts share the
 * data (an int32 → float32 cast keeps the Int32Array, bool → float32 the Uint8Array), so a float32 tensor's
 * values need not be a Float32Array; the kernels read a converted copy, kept as long as the original (tfjs
 * never writes an array after it is made, so the copy stays right).
 */
const converted = new WeakMap<object, tf.TypedArray>()

/** t's typed array on the cpu backend, of t's dtype and checked to hold t's shape (the bound C cannot check there). */
const valuesOf = (be: CpuBackend, t: tf.TensorInfo, write = false): tf.TypedArray => {
  const values = be.data.get(t.dataId)?.values
  const want = tf.util.sizeFromShape(t.shape)
  const type = arrayType[t.dtype as keyof typeof arrayType] as (typeof arrayType)[keyof typeof arrayType] | undefined
  if (type === undefined || !ArrayBuffer.isView(values) || (values as tf.TypedArray).length < want) {
    const got = ArrayBuffer.isView(values) ? `${values.constructor.name} of ${(values as tf.TypedArray).length}` : typeof values
    throw new Error(`native kernel on cpu: the ${t.dtype} [${t.shape}] tensor's data must be a typed array of ≥ ${want} elements (got ${got})`)
  }
  if (values instanceof type) return values
  if (write) throw new Error(`native kernel on cpu: cannot write the ${t.dtype} [${t.shape}] tensor in place: its data is a ${values.constructor.name}`)
  let copy = converted.get(values)
  if (copy === undefined) converted.set(values, (copy = type.from(values as tf.TypedArray)))
  return copy
}

const cpuMemory = (be: CpuBackend, addon: Addon): Memory => ({
  heap: () => null,
  offset: (t) => addon.address(valuesOf(be, t)),
  output: (shape, dtype) => {
    const n = tf.util.sizeFromShape([...shape])
    return be.makeTensorInfo([...shape], dtype, new (arrayType[dtype as keyof typeof arrayType] ?? Float32Array)(n))
  },
  view: (t) => valuesOf(be, t, true).subarray(0, tf.util.sizeFromShape(t.shape))
})

const cache = new WeakMap<object, Memory>()

/** The memory of the backend a kernel was called with (the wasm backend has `wasm`, the cpu backend `data`). */
export const of = (backend: unknown, addon: Addon): Memory => {
  const be = backend as object
  const hit = cache.get(be)
  if (hit !== undefined) return hit
  const m = "wasm" in be ? wasmMemory(be as WasmBackend) : cpuMemory(be as CpuBackend, addon)
  cache.set(be, m)
  return m
}
