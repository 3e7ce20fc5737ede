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
 */
import * as tf from "@tensorflow/tfjs"

interface WasmModule {
  cwrap(name: string, ret: null, args: ReadonlyArray<string>): (...args: ReadonlyArray<unknown>) => void
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
  const at = transposeA ? transposeLast2(backend, a) : a
  const bt = transposeB ? transposeLast2(backend, b) : b
  if (transposeA) temps.push(at)
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
  for (const t of temps) backend.disposeData(t.dataId)
  return out
}

/** The stock kernel, kept to compare against in tests. */
let stock: tf.KernelConfig | undefined

/** Registers the faster wasm kernels (idempotent) and names them. Call after the wasm backend is set. */
export const install = (): ReadonlyArray<string> => {
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
