/**
 * Fused causal attention, forward and backward, natively on the wasm heap or the cpu backend's arrays.
 *
 *   O = softmax(Q Kᵀ + M) V    Q [B, Hkv, G·T, hd] (row g·T + t), K, V [B, Hkv, S, hd], S = past + T
 *
 * Query row t of each of the G groups sees keys s ≤ past + t. The native kernel never reads the keys after
 * that, so M must hide them (−1e9, as a causal mask does); M may hide more (padding). It differs from the
 * composite only for a row whose every visible key M hides: the composite then spreads it over all S keys,
 * the kernel over the visible ones.
 *
 * The forward saves each row's log-sum-exp rather than the [.., G·T, S] probabilities (flash-attention style)
 * and the backward recomputes them per row block: one more product, no quadratic tensor kept between the
 * passes (see native/attention.c). Where the kernels are not registered (another backend, no addon), or for
 * inputs they do not take (not float32, batch-broadcast operands, a mask not [B or 1, Hkv or 1, G·T, S]),
 * `causal` computes the composite `matMul(softmax(add(matMul(q, k, false, true), mask)), v)`.
 */
import * as tf from "@tensorflow/tfjs"
import * as Memory from "./Memory.js"
import type { Addon } from "./Native.js"
import * as Registry from "./Registry.js"

/** Kernel names: forward (outputs O and the row log-sum-exp) and backward (outputs dQ, dK, dV). */
export const FORWARD = "R1CausalAttention"
export const BACKWARD = "R1CausalAttentionGrad"

/** The addon's attention functions (offsets in bytes, mask strides in elements; see native/attention.c). */
interface AttentionAddon {
  attentionForward(
    heap: Uint8Array | null, B: number, H: number, G: number, T: number, past: number, hd: number,
    qOff: number, kOff: number, vOff: number, mOff: number, mStrideB: number, mStrideH: number, oOff: number, lseOff: number
  ): void
  attentionBackward(
    heap: Uint8Array | null, B: number, H: number, G: number, T: number, past: number, hd: number,
    qOff: number, kOff: number, vOff: number, mOff: number, mStrideB: number, mStrideH: number, oOff: number, lseOff: number,
    dyOff: number, dqOff: number, dkOff: number, dvOff: number
  ): void
}

interface Layout {
  readonly B: number
  readonly H: number
  readonly G: number
  readonly T: number
  readonly hd: number
  /** Mask element strides over batch and kv head, 0 where it broadcasts. */
  readonly msb: number
  readonly msh: number
}

/** The sizes the native kernels take, or `undefined` for inputs they do not handle. */
const layout = (q: tf.TensorInfo, k: tf.TensorInfo, v: tf.TensorInfo, mask: tf.TensorInfo, past: number): Layout | undefined => {
  if ([q, k, v, mask].some((t) => t.dtype !== "float32") || q.shape.length !== 4 || k.shape.length !== 4) return undefined
  const [B, H, rows, hd] = q.shape
  const S = k.shape[2], T = S - past
  if (!tf.util.arraysEqual(k.shape, v.shape) || k.shape[0] !== B || k.shape[1] !== H || k.shape[3] !== hd) return undefined
  if (B * H * rows * hd === 0 || T < 1 || rows % T !== 0 || mask.shape.length > 4) return undefined
  const [mb, mh, mr, ms] = [...new Array<number>(4 - mask.shape.length).fill(1), ...mask.shape]
  if (mr !== rows || ms !== S || (mb !== 1 && mb !== B) || (mh !== 1 && mh !== H)) return undefined
  return { B, H, G: rows / T, T, hd, msb: mb === 1 ? 0 : mh * rows * S, msh: mh === 1 ? 0 : rows * S }
}

/** The attention `causal` replaces, exactly as the model computed it. */
const composite = (q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, mask: tf.Tensor): tf.Tensor4D =>
  tf.matMul(tf.softmax(tf.add(tf.matMul(q, k, false, true), mask)), v)

/**
 * `O = softmax(Q Kᵀ + M) V` for q [B, Hkv, G·T, hd] (query heads grouped by kv head, the 1/√hd scale
 * already in q), k, v [B, Hkv, past + T, hd] and an additive mask broadcastable to [B, Hkv, G·T, past + T]
 * that hides the keys after past + t from row g·T + t. Returns [B, Hkv, G·T, hd]; differentiable in q, k, v.
 */
export const causal = (q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, mask: tf.Tensor, past = 0): tf.Tensor4D => {
  const S = k.shape[2], rows = q.shape[2]
  if (!Number.isInteger(past) || past < 0 || past >= S || rows % (S - past) !== 0) {
    throw new RangeError(`Attention.causal: past ${past} must leave T = S − past ≥ 1 keys (S = ${S}) with T dividing the ${rows} query rows`)
  }
  if (!Registry.has(FORWARD) || layout(q, k, v, mask, past) === undefined) return composite(q, k, v, mask)
  const [o, lse] = tf.engine().runKernel(FORWARD, { q, k, v, mask }, { past }) as Array<tf.Tensor>
  lse.dispose() // the gradient keeps its own reference
  return o as tf.Tensor4D
}

/** The gradient of the composite in tf ops, for a backward that finds the native kernel gone. */
const compositeGrad = (q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, mask: tf.Tensor, dy: tf.Tensor4D): Array<tf.Tensor> => {
  const p = tf.softmax(tf.add(tf.matMul(q, k, false, true), mask)) // [B, Hkv, G·T, S]
  const dp = tf.matMul(dy, v, false, true)
  const ds = tf.mul(p, tf.sub(dp, tf.sum(tf.mul(dp, p), -1, true)))
  return [tf.matMul(ds, k), tf.matMul(ds, q, true, false), tf.matMul(p, dy, true, false)]
}

tf.registerGradient({
  kernelName: FORWARD,
  inputsToSave: ["q", "k", "v", "mask"],
  outputsToSave: [true, true],
  gradFunc: (dys, saved, attrs) => {
    const [q, k, v, mask, o, lse] = saved as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D, tf.Tensor, tf.Tensor4D, tf.Tensor3D]
    const dy = (dys as Array<tf.Tensor>)[0] as tf.Tensor4D // the log-sum-exp output is internal: no gradient flows into it
    // All three come from one pass, so they are computed now rather than one per accessor.
    const [dq, dk, dv] = !Registry.has(BACKWARD)
      ? compositeGrad(q, k, v, mask, dy)
      : (tf.engine().runKernel(BACKWARD, { q, k, v, mask, o, lse, dy }, attrs as unknown as tf.NamedAttrMap) as Array<tf.Tensor>)
    return {
      q: () => dq,
      k: () => dk,
      v: () => dv,
      mask: () => {
        throw new Error("Attention.causal: no gradient with respect to the mask")
      }
    }
  }
})

const unsupported = (name: string) => new Error(`${name}: inputs the native kernel does not take (Attention.causal checks them first)`)

/** Forward: outputs O [B, Hkv, G·T, hd] and the row log-sum-exp [B, Hkv, G·T]. */
const forward = (addon: AttentionAddon): tf.KernelFunc => ({ inputs, attrs, backend }) => {
  const mem = Memory.of(backend, addon as unknown as Addon)
  const { q, k, v, mask } = inputs as Record<"q" | "k" | "v" | "mask", tf.TensorInfo>
  const { past } = attrs as unknown as { past: number }
  const l = layout(q, k, v, mask, past)
  if (l === undefined) throw unsupported(FORWARD)
  // Allocate first: it can grow the wasm memory, which replaces HEAPU8.
  const o = mem.output(q.shape, "float32"), lse = mem.output(q.shape.slice(0, 3), "float32")
  addon.attentionForward(
    mem.heap(), l.B, l.H, l.G, l.T, past, l.hd, mem.offset(q), mem.offset(k), mem.offset(v), mem.offset(mask), l.msb, l.msh,
    mem.offset(o), mem.offset(lse)
  )
  return [o, lse]
}

/** Backward: outputs dQ, dK, dV from the forward's inputs, its outputs O and log-sum-exp, and dO. */
const backward = (addon: AttentionAddon): tf.KernelFunc => ({ inputs, attrs, backend }) => {
  const mem = Memory.of(backend, addon as unknown as Addon)
  const { q, k, v, mask, o, lse, dy } = inputs as Record<"q" | "k" | "v" | "mask" | "o" | "lse" | "dy", tf.TensorInfo>
  const { past } = attrs as unknown as { past: number }
  const l = layout(q, k, v, mask, past)
  if (l === undefined) throw unsupported(BACKWARD)
  const dq = mem.output(q.shape, "float32"), dk = mem.output(k.shape, "float32"), dv = mem.output(v.shape, "float32")
  addon.attentionBackward(
    mem.heap(), l.B, l.H, l.G, l.T, past, l.hd, mem.offset(q), mem.offset(k), mem.offset(v), mem.offset(mask), l.msb, l.msh,
    mem.offset(o), mem.offset(lse), mem.offset(dy), mem.offset(dq), mem.offset(dk), mem.offset(dv)
  )
  return [dq, dk, dv]
}

/** The native kernels of this module, by kernel name, for `Kernels.install`. */
export const kernels = (addon: Addon): ReadonlyArray<readonly [string, tf.KernelFunc]> => {
  const a = addon as Addon & Partial<AttentionAddon>
  if (a.attentionForward === undefined || a.attentionBackward === undefined) return [] // an addon built before this file
  const native = a as AttentionAddon
  return [[FORWARD, forward(native)], [BACKWARD, backward(native)]]
}
