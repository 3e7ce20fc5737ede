/**
 * Faster kernels for the wasm backend, registered over the stock ones.
 *
 * The stock wasm `BatchMatMul` runs on XNNPACK (21–27 GFLOP/s here) only when the batch is 1 and neither
 * input is transposed; every other case falls to a plain loop at 1.5–2 GFLOP/s. Backprop through `matMul`
 * produces transposed products and attention needs batched ones, so this kernel rewrites each case into
 * fast-path calls of the same C++ function:
 * - a transposed input is transposed explicitly first (one copy, O(n²) against the product's O(n³));
 * - `[B, M, K] × [K, N]` (batch of b is 1) is one `[B·M, K] × [K, N]` product;
 * - a true batch is a loop of `[M, K] × [K, N]` products over views of the inputs and output, each view a
 *   temporary tensor id registered at an offset into the existing wasm heap (no copy). Ids are fresh for
 *   every call, so XNNPACK's packed-weights cache (keyed by the id of b) never sees stale data; disposing a
 *   view id runs the cache's disposal callback and frees nothing.
 * Results match the stock kernel (checked in the tests).
 *
 * `install` also guards the wasm heap. It is 32-bit (4 GiB at most) and never shrinks; when it is full the
 * backend's `_malloc` returns 0 and tfjs writes the tensor at address 0 anyway, over the module's own data:
 * a later kernel then dies with "RuntimeError: Aborted()", "divide by zero" or "memory access out of
 * bounds", which kills the process. The guard makes such an allocation throw `WasmHeapError` instead
 * (nothing written, the heap intact, tidy scopes free what they hold), and keeps the top `HEAP_HEADROOM`
 * bytes for the allocations the C++ kernels make themselves (XNNPACK operators and packed weights), which
 * abort on failure and cannot be guarded from here.
 */
import * as tf from "@tensorflow/tfjs"

interface WasmModule {
  cwrap(name: string, ret: null, args: ReadonlyArray<string>): (...args: ReadonlyArray<unknown>) => void
  _malloc(bytes: number): number
  _free(offset: number): void
  HEAPU8: Uint8Array
  tfjs: {
    registerTensor(id: number, size: number, offset: number): void
    disposeData(id: number): void
  }
}

interface TensorData { readonly id: number; readonly memoryOffset: number }

interface WasmBackend {
  wasm: WasmModule
  dataIdNextNumber: number
  dataIdMap: { get(dataId: unknown): TensorData }
  makeOutput(shape: ReadonlyArray<number>, dtype: tf.DataType): tf.TensorInfo
  disposeData(dataId: unknown): boolean
  move(dataId: unknown, values: unknown, shape: ReadonlyArray<number>, dtype: tf.DataType, refCount: number): void
}

/** The largest wasm32 heap (4 GiB − 64 KiB, what tfjs's wasm build allows). */
export const HEAP_MAX = 4294901760
/** Bytes at the top of the heap that tensors may not use: room for the C++ kernels' own allocations. */
export const HEAP_HEADROOM = 128 * 2 ** 20

/** A tensor did not fit in the wasm heap (the backend's memory is unchanged; smaller batches may fit). */
export class WasmHeapError extends RangeError {
  override readonly name = "WasmHeapError"
}

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`

const guarded = new WeakSet<object>()

/**
 * Makes the backend's tensor allocations fail with `WasmHeapError` rather than write at address 0 when
 * the heap is full (see the module comment). Idempotent; `install` calls it.
 */
export const guardHeap = (backend: tf.KernelBackend): void => {
  const be = backend as unknown as WasmBackend
  if (guarded.has(be) || be.wasm === undefined) return
  guarded.add(be)
  const wasm = be.wasm
  // Emscripten's `_malloc` starts as a stub that replaces itself on its first call: make that call now,
  // so the wrapper below is not overwritten by it.
  wasm._free(wasm._malloc(4))
  const malloc = wasm._malloc.bind(wasm)
  const move = be.move.bind(be)
  // What `move` is allocating, for the error message.
  let pending: { shape: ReadonlyArray<number>; dtype: tf.DataType } | undefined
  wasm._malloc = (bytes: number): number => {
    // `malloc` takes a 32-bit size: 4 GiB or more would wrap around to a small block, so it is not called.
    const offset = bytes > HEAP_MAX - HEAP_HEADROOM ? 0 : malloc(bytes) >>> 0
    if (bytes > 0 && (offset === 0 || offset + bytes > HEAP_MAX - HEAP_HEADROOM)) {
      if (offset !== 0) wasm._free(offset)
      const what = pending === undefined ? "" : ` for a ${pending.dtype} tensor [${pending.shape.join(", ")}]`
      throw new WasmHeapError(
        `wasm heap exhausted: cannot allocate ${mib(bytes)}${what} (heap ${mib(wasm.HEAPU8.length)} of at most ${mib(HEAP_MAX)}, ` +
          `${mib(HEAP_HEADROOM)} kept for the kernels; tfjs holds ${mib(tf.memory().numBytes)} in tensors). ` +
          `Use smaller batches (e.g. the trainer's microBatchSize), or dispose tensors that are no longer needed.`
      )
    }
    return offset
  }
  be.move = (dataId, values, shape, dtype, refCount) => {
    pending = { shape, dtype }
    try {
      move(dataId, values, shape, dtype, refCount)
    } finally {
      pending = undefined
    }
  }
}

type MatMulFn = (aId: number, aShape: Uint8Array, aRank: number, bId: number, bShape: Uint8Array, bRank: number, ta: boolean, tb: boolean, outId: number) => void

const wrapped = new WeakMap<WasmModule, MatMulFn>()
const matMulFn = (backend: WasmBackend): MatMulFn => {
  let f = wrapped.get(backend.wasm)
  if (f === undefined) {
    f = backend.wasm.cwrap("BatchMatMul", null, ["number", "array", "number", "number", "array", "number", "number", "number", "number"]) as MatMulFn
    wrapped.set(backend.wasm, f)
  }
  return f
}

const shapeBytes = (shape: ReadonlyArray<number>) => new Uint8Array(new Int32Array(shape).buffer)

/** Swaps the last two axes through the backend's own Transpose kernel (a new tensor the caller disposes). */
const transposeLast2 = (backend: WasmBackend, x: tf.TensorInfo): tf.TensorInfo => {
  const rank = x.shape.length
  const perm = [...Array(rank).keys()]
  perm[rank - 2] = rank - 1
  perm[rank - 1] = rank - 2
  const kernel = tf.getKernel("Transpose", "wasm")
  if (kernel === undefined) throw new Error("the wasm backend has no Transpose kernel")
  return kernel.kernelFunc({ inputs: { x }, backend: backend as unknown as tf.KernelBackend, attrs: { perm } }) as tf.TensorInfo
}

const batchMatMul: tf.KernelFunc = ({ inputs, backend: kb, attrs }) => {
  const backend = kb as unknown as WasmBackend
  const { a, b } = inputs as { a: tf.TensorInfo; b: tf.TensorInfo }
  const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean }
  if (a.dtype !== "float32" || b.dtype !== "float32") throw new Error("BatchMatMul supports float32 only")
  const temps: Array<tf.TensorInfo> = []
  try {
    return product(backend, a, b, transposeA, transposeB, temps)
  } finally {
    // also when an allocation failed (WasmHeapError): the transposed copies are ours to free
    for (const t of temps) backend.disposeData(t.dataId)
  }
}

const product = (backend: WasmBackend, a: tf.TensorInfo, b: tf.TensorInfo, transposeA: boolean, transposeB: boolean, temps: Array<tf.TensorInfo>): tf.TensorInfo => {
  const at = transposeA ? transposeLast2(backend, a) : a
  if (transposeA) temps.push(at)
  const bt = transposeB ? transposeLast2(backend, b) : b
  if (transposeB) temps.push(bt)
  const ra = at.shape.length, rb = bt.shape.length
  const m = at.shape[ra - 2], k = at.shape[ra - 1], n = bt.shape[rb - 1]
  if (bt.shape[rb - 2] !== k) {
    throw new Error(`matMul: inner shapes ${k} and ${bt.shape[rb - 2]} of [${a.shape}] and [${b.shape}] (transposeA=${transposeA}, transposeB=${transposeB}) must match`)
  }
  const outerA = at.shape.slice(0, -2), outerB = bt.shape.slice(0, -2)
  const batchA = outerA.reduce((p, d) => p * d, 1), batchB = outerB.reduce((p, d) => p * d, 1)
  const outer = tf.broadcast_util.assertAndGetBroadcastShape(outerA, outerB)
  const batch = Math.max(batchA, batchB)
  if (batchA !== batchB && batchA !== 1 && batchB !== 1) throw new Error(`matMul: batch dims [${outerA}] and [${outerB}] need a general broadcast, not supported`)
  const out = backend.makeOutput([...outer, m, n], "float32")
  const mm = matMulFn(backend)
  const da = backend.dataIdMap.get(at.dataId), db = backend.dataIdMap.get(bt.dataId), dout = backend.dataIdMap.get(out.dataId)
  if (batchB === 1) {
    // [B·M, K] × [K, N]: one product, no views needed.
    mm(da.id, shapeBytes([1, batchA * m, k]), 3, db.id, shapeBytes([1, k, n]), 3, false, false, dout.id)
  } else {
    const sa = shapeBytes([1, m, k]), sb = shapeBytes([1, k, n])
    for (let i = 0; i < batch; i++) {
      const ia = backend.dataIdNextNumber++, ib = backend.dataIdNextNumber++, io = backend.dataIdNextNumber++
      backend.wasm.tfjs.registerTensor(ia, m * k, da.memoryOffset + (batchA === 1 ? 0 : i * m * k * 4))
      backend.wasm.tfjs.registerTensor(ib, k * n, db.memoryOffset + i * k * n * 4)
      backend.wasm.tfjs.registerTensor(io, m * n, dout.memoryOffset + i * m * n * 4)
      mm(ia, sa, 3, ib, sb, 3, false, false, io)
      backend.wasm.tfjs.disposeData(ia)
      backend.wasm.tfjs.disposeData(ib)
      backend.wasm.tfjs.disposeData(io)
    }
  }
  return out
}

/** The stock kernel, kept to compare against in tests. */
let stock: tf.KernelConfig | undefined

/**
 * Registers the faster wasm kernels (idempotent) and names them, and guards the heap (`guardHeap`). Call
 * after the wasm backend is set.
 */
export const install = (): ReadonlyArray<string> => {
  const backend = tf.findBackend("wasm")
  if (backend === null) throw new Error("the wasm backend is not set up")
  guardHeap(backend)
  if (stock === undefined) {
    stock = tf.getKernel("BatchMatMul", "wasm")
    if (stock === undefined) throw new Error("the wasm backend has no BatchMatMul kernel to replace")
    tf.unregisterKernel("BatchMatMul", "wasm")
    tf.registerKernel({ kernelName: "BatchMatMul", backendName: "wasm", kernelFunc: batchMatMul })
  }
  return ["BatchMatMul"]
}

/** Puts the stock kernel back (tests compare the two). */
export const uninstall = (): void => {
  if (stock !== undefined) {
    tf.unregisterKernel("BatchMatMul", "wasm")
    tf.registerKernel(stock)
    stock = undefined
  }
}
