/**
 * `Transpose` on the native addon (wasm and cpu backends), in place on their memory (`Memory`):
 *
 *   out[i₀, …, i_{r−1}] = x[i_{q(0)}, …]   with out dim d = x dim perm[d]
 *
 * The permutation is collapsed first: size-1 dims dropped, output dims that read neighbouring input dims in order
 * merged. What is left of an identity (tfjs's gradients transpose by [0, 1]) shares the input's buffer as
 * `Identity` does; otherwise the addon copies contiguous rows whole, or transposes in cache tiles
 * (native/layout.c). The cpu backend's stock kernel walks every element in JavaScript (0.75 s for a
 * [49152, 576] embedding gradient). Other dtypes, and more than 8 dims after collapsing, go to the stock kernel.
 */
import * as tf from "@tensorflow/tfjs"
import * as Memory from "./Memory.js"
import type { Addon } from "./Native.js"

interface LayoutAddon {
  transpose(heap: Uint8Array | null, xOff: number, outOff: number, desc: Int32Array): void
}

/** The output shape and, per output dim, the input's element stride, collapsed (see the module doc). */
export const collapse = (shape: ReadonlyArray<number>, perm: ReadonlyArray<number>): { shape: Array<number>; stride: Array<number> } => {
  const inStride = new Array<number>(shape.length)
  for (let d = shape.length - 1, s = 1; d >= 0; d--) {
    inStride[d] = s
    s *= shape[d]
  }
  const out: Array<number> = [], stride: Array<number> = []
  for (const p of perm) {
    if (shape[p] === 1) continue
    const last = out.length - 1
    if (last >= 0 && stride[last] === inStride[p] * shape[p]) {
      out[last] *= shape[p]
      stride[last] = inStride[p]
    } else {
      out.push(shape[p])
      stride.push(inStride[p])
    }
  }
  return out.length === 0 ? { shape: [1], stride: [1] } : { shape: out, stride }
}

const desc = new Int32Array(1 + 2 * 8)

/** `Transpose` of float32 / int32. */
export const transpose = (addon: Addon, previous: tf.KernelFunc): tf.KernelFunc => (args) => {
  const { x } = args.inputs as { x: tf.TensorInfo }
  const { perm } = args.attrs as unknown as { perm: Array<number> }
  if (x.dtype !== "float32" && x.dtype !== "int32") return previous(args)
  const outShape = perm.map((p) => x.shape[p])
  const c = collapse(x.shape, perm)
  if (c.shape.length > 8) return previous(args)
  if (c.shape.length === 1 && c.stride[0] === 1) {
    ;(args.backend as unknown as { incRef(dataId: unknown): void }).incRef(x.dataId)
    return { dataId: x.dataId, shape: outShape, dtype: x.dtype }
  }
  const mem = Memory.of(args.backend, addon)
  const out = mem.output(outShape, x.dtype)
  if (tf.util.sizeFromShape(outShape) === 0) return out
  const r = c.shape.length
  desc[0] = r
  desc.set(c.shape, 1)
  desc.set(c.stride, 1 + r)
  ;(addon as unknown as LayoutAddon).transpose(mem.heap(), mem.offset(x), mem.offset(out), desc)
  return out
}
