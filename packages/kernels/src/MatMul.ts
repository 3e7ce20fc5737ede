/**
 * `BatchMatMul` for the wasm and cpu backends on the native GEMM, reading the operands and writing the product
 * in place, in the wasm heap or the cpu backend's typed arrays (no copies, no transposes: BLAS takes the
 * transposes as flags; see `Memory`).
 *
 *   C[..., m, n] = Σₖ op(A)[..., m, k] · op(B)[..., k, n]
 *
 * Batch broadcasting: equal batches, or one side of batch 1 (stride 0). A general broadcast (`[2, 1]` ×
 * `[1, 3]`) or a non-float32 input goes to the kernel that was registered before. `[B, M, K] × [K, N]`
 * with A not transposed is one `[B·M, K] × [K, N]` product (one large GEMM beats B small ones).
 */
import * as tf from "@tensorflow/tfjs"
import * as Memory from "./Memory.js"
import type { Addon } from "./Native.js"

/** The parts of the wasm backend used here (kept for importers; see `Memory.WasmBackend`). */
export type WasmBackend = Memory.WasmBackend

const product = (xs: ReadonlyArray<number>) => xs.reduce((p, d) => p * d, 1)

/** The kernel function over `addon`, deferring to `previous` where it does not apply. */
export const batchMatMul = (addon: Addon, previous: tf.KernelFunc): tf.KernelFunc => (args) => {
  const mem = Memory.of(args.backend, addon)
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
  const out = mem.output([...outer, m, n], "float32")
  if (batch * m * n === 0) return out
  if (k === 0) {
    mem.view(out).fill(0)
    return out
  }
  const aOff = mem.offset(a), bOff = mem.offset(b), cOff = mem.offset(out)
  const heap = mem.heap()
  if (batchB === 1 && batchA > 1 && !transposeA) {
    addon.gemm(heap, 1, batchA * m, n, k, 0, transposeB ? 1 : 0, aOff, 0, bOff, 0, cOff, 0)
  } else {
    addon.gemm(heap, batch, m, n, k, transposeA ? 1 : 0, transposeB ? 1 : 0, aOff, batchA === 1 ? 0 : 4 * m * k, bOff, batchB === 1 ? 0 : 4 * k * n, cOff, 4 * m * n)
  }
  return out
}
