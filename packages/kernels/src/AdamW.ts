/**
 * The AdamW update of one weight as one kernel, `R1AdamW`:
 *
 *   g ← g·s    m ← m·β1 + g·(1 − β1)    v ← v·β2 + g²·(1 − β2)    θ ← θ·d − ((m / c1) / (√(v / c2) + ε))·lr
 *
 * with c1 = 1 − β1ᵗ, c2 = 1 − β2ᵗ, d = 1 − lr·λ (decoupled decay; 1 for no decay) and s the clip factor.
 * The composite is ~12 elementwise kernels per weight, each a full pass over it; the native kernel is one
 * pass, in the composite's float32 order of operations and without fused multiply-adds, so it gives bitwise
 * the same weights and moments (the tests check it). Where the kernel is not registered (another backend,
 * no addon) the composite runs.
 */
import * as tf from "@tensorflow/tfjs"
import * as Memory from "./Memory.js"
import type { Addon } from "./Native.js"
import * as Registry from "./Registry.js"

/** The update's scalars for one step. */
export interface Hyper {
  readonly beta1: number
  readonly beta2: number
  /** 1 − β1ᵗ, 1 − β2ᵗ */
  readonly c1: number
  readonly c2: number
  readonly epsilon: number
  /** 1 − lr·λ, or 1 for no decay. */
  readonly decay: number
  readonly learningRate: number
  /** Gradient scale (the clip factor); 1 for none. */
  readonly scale: number
}

/** The kernel's name in tfjs's registry. */
export const KERNEL = "R1AdamW"

const composite = (p: tf.Tensor, m: tf.Tensor, v: tf.Tensor, grad: tf.Tensor, h: Hyper): [tf.Tensor, tf.Tensor, tf.Tensor] =>
  tf.tidy(() => {
    const g = h.scale === 1 ? grad : tf.mul(grad, h.scale)
    const m1 = tf.add(tf.mul(m, h.beta1), tf.mul(g, 1 - h.beta1))
    const v1 = tf.add(tf.mul(v, h.beta2), tf.mul(tf.square(g), 1 - h.beta2))
    const update = tf.div(tf.div(m1, h.c1), tf.add(tf.sqrt(tf.div(v1, h.c2)), h.epsilon))
    const decayed = h.decay === 1 ? p : tf.mul(p, h.decay)
    return [tf.sub(decayed, tf.mul(update, h.learningRate)), m1, v1]
  })

/** New (θ, m, v) of one weight; the caller assigns them (and disposes the old ones by doing so). */
export const update = (p: tf.Tensor, m: tf.Tensor, v: tf.Tensor, grad: tf.Tensor, h: Hyper): [tf.Tensor, tf.Tensor, tf.Tensor] => {
  const same = [m, v, grad].every((t) => t.dtype === "float32" && tf.util.arraysEqual(t.shape, p.shape)) && p.dtype === "float32"
  if (!same || !Registry.has(KERNEL)) return composite(p, m, v, grad, h)
  const attrs = { ...h } as unknown as tf.NamedAttrMap
  return tf.engine().runKernel(KERNEL, { p, m, v, g: grad }, attrs) as unknown as [tf.Tensor, tf.Tensor, tf.Tensor]
}

type Native = Addon & {
  adamw(heap: Uint8Array | null, p: number, m: number, v: number, g: number, pOut: number, mOut: number, vOut: number, n: number, hyper: Float64Array): void
}

const hyper = new Float64Array(10)

/** The native kernel. */
export const kernel = (addon: Addon): tf.KernelFunc => (args) => {
  const mem = Memory.of(args.backend, addon)
  const { p, m, v, g } = args.inputs as Record<"p" | "m" | "v" | "g", tf.TensorInfo>
  const h = args.attrs as unknown as Hyper
  const outs = [p, m, v].map((t) => mem.output(t.shape, "float32"))
  const n = tf.util.sizeFromShape(p.shape)
  if (n === 0) return outs
  hyper.set([h.beta1, 1 - h.beta1, h.beta2, 1 - h.beta2, h.c1, h.c2, h.epsilon, h.decay, h.learningRate, h.scale])
  ;(addon as Native).adamw(mem.heap(), mem.offset(p), mem.offset(m), mem.offset(v), mem.offset(g), mem.offset(outs[0]), mem.offset(outs[1]), mem.offset(outs[2]), n, hyper)
  return outs
}
