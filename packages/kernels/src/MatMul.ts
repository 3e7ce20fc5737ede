/**
 * `BatchMatMul` for the wasm backend on the native GEMM, reading the operands and writing the product
 * straight in the wasm heap (no copies, no transposes: BLAS takes the transposes as flags).
 *
 *   C[..., m, n] = Σₖ op(A)[..., m, k] · op(B)[..., k, n]
 *
 * Batch broadcasting: equal batches, or one side of batch 1 (stride 0). A general broadcast (`[2, 1]` ×
 * `[1, 3]`) or a non-float32 input goes to the kernel that was registered before. `[B, M, K] × [K, N]`
 * with A not transposed is one `[B·M, K] × [K, N]` product (one large GEMM beats B small ones).
 */
import * as tf from "@tensorflow/tfjs"
import type { Addon } from "./Native.js"

/** The parts of the wasm backend used here (it keeps them public in JavaScript). */
export interface WasmBackend {
  readonly wasm: { readonly HEAPU8: Uint8Array }
  readonly dataIdMap: { get(dataId: unknown): { readonly memoryOffset: number } }
  makeOutput(shape: ReadonlyArray<number>, dtype: tf.DataType): tf.TensorInfo
}

const product = (xs: ReadonlyArray<number>) => xs.reduce((p, d) => p * d, 1)

/** The kernel function over `addon`, deferring to `previous` where it does not apply. */
export const batchMatMul = (addon: Addon, previous: tf.KernelFunc): tf.KernelFunc => (args) => {
  const backend = args.backend as unknown as WasmBackend
  const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo }
  const { transposeA, transposeB } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean }
  if (a.dtype !== "float32" || b.dtype !== "float32") return previous(args)
  const ra = a.shape.length, rb = b.shape.length
  const m = transposeA ? a.shape[ra - 1] : a.shape[ra - 2], k = transposeA ? a.shape[ra - 2] : a.shape[ra - 1]
  const kb = transposeB ? b.shape[rb - 1] : b.shape[rb - 2], n = transposeB ? b.shape[rb - 2] : b.shape[rb - 1]
  if (k !== kb) {
    throw new Error(`matMul: inner shapes ${k} and ${kb} of [${a.shape}] and [${b.shape}] (transposeA=${transposeA}, transposeB=${transposeB}) must match`)
  }
  const outerA = a.shape.slice(0, -2), outerB = b.shape.slice(0, -2)
  const outer = tf.broadcast_util.assertAndGetBroadcastShape(outerA, outerB)
  const batch = product(outer), batchA = product(outerA), batchB = product(outerB)
  if ((batchA !== batch && batchA !== 1) || (batchB !== batch && batchB !== 1)) return previous(args)
  // Allocate first: it can grow the wasm memory, which replaces HEAPU8.
  const out = backend.makeOutput([...outer, m, n], "float32")
  if (batch * m * n === 0) return out
  const aOff = backend.dataIdMap.get(a.dataId).memoryOffset
  const bOff = backend.dataIdMap.get(b.dataId).memoryOffset
  const cOff = backend.dataIdMap.get(out.dataId).memoryOffset
  const heap = backend.wasm.HEAPU8
  if (k === 0) {
    heap.fill(0, cOff, cOff + 4 * batch * m * n)
  } else if (batchB === 1 && batchA > 1 && !transposeA) {
    addon.gemm(heap, 1, batchA * m, n, k, 0, transposeB ? 1 : 0, aOff, 0, bOff, 0, cOff, 0)
  } else {
    addon.gemm(heap, batch, m, n, k, transposeA ? 1 : 0, transposeB ? 1 : 0, aOff, batchA === 1 ? 0 : 4 * m * k, bOff, batchB === 1 ? 0 : 4 * k * n, cOff, 4 * m * n)
  }
  return out
}
