/**
 * Fused RMSNorm, SwiGLU and rotary embedding (RoPE), forward and backward. Where their native kernels are
 * registered for the current backend (`Kernels.install` on wasm and cpu), each op is one kernel forward and one backward
 * (the composites run 5–15 kernels each way, each allocating an intermediate); elsewhere, and for dtypes and
 * shapes the kernels do not take, each op is the composite of tfjs ops the model always ran, so other backends
 * and builds without the addon compute exactly what they did before.
 */
import * as tf from "@tensorflow/tfjs"
import * as Memory from "./Memory.js"
import type { Addon } from "./Native.js"
import { has as native } from "./Registry.js"

/** What the addon exports for these kernels (`native/fused.c`); offsets in bytes into `heap`. */
interface FusedAddon {
  rmsNorm(heap: Uint8Array | null, xOff: number, gOff: number, yOff: number, rows: number, c: number, eps: number): void
  rmsNormGrad(heap: Uint8Array | null, dyOff: number, xOff: number, gOff: number, dxOff: number, dgOff: number, rows: number, c: number, eps: number): void
  swiglu(heap: Uint8Array | null, gateOff: number, upOff: number, yOff: number, n: number): void
  swigluGrad(heap: Uint8Array | null, dyOff: number, gateOff: number, upOff: number, dGateOff: number, dUpOff: number, n: number): void
  rope(heap: Uint8Array | null, xOff: number, cosOff: number, sinOff: number, yOff: number, b: number, t: number, h: number, hd: number, cosBatch: number, backward: 0 | 1): void
}

const RMS_NORM = "R1RmsNorm"
const RMS_NORM_GRAD = "R1RmsNormGrad"
const SWIGLU = "R1Swiglu"
const SWIGLU_GRAD = "R1SwigluGrad"
const ROPE = "R1Rope"
const ROPE_GRAD = "R1RopeGrad"

const run = <T extends tf.Tensor | Array<tf.Tensor>>(kernelName: string, inputs: Record<string, tf.Tensor>, attrs: Record<string, number> = {}): T =>
  tf.engine().runKernel(kernelName, inputs as tf.NamedTensorMap, attrs as unknown as tf.NamedAttrMap) as T
const f32 = (...ts: Array<tf.Tensor>) => ts.every((t) => t.dtype === "float32")

/**
 * RMSNorm over the last axis: `y = x / sqrt(mean(x²) + ε) ⊙ g`, x `[N, C]` (any leading dims), g `[C]` → `[N, C]`.
 * Differentiable in x and g.
 */
export const rmsNorm = <T extends tf.Tensor>(x: T, g: tf.Tensor, eps: number): T => {
  const c = x.shape[x.rank - 1]
  if (x.rank >= 1 && x.size > 0 && g.rank === 1 && g.shape[0] === c && f32(x, g) && native(RMS_NORM)) return run<T>(RMS_NORM, { x, g }, { eps })
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), eps))), g)
}

/** SwiGLU: `y = gate·σ(gate) ⊙ up`, gate and up `[N, F]` (or any one shape) → `[N, F]`. Differentiable in both. */
export const swiglu = <T extends tf.Tensor>(gate: T, up: T): T => {
  if (gate.size > 0 && tf.util.arraysEqual(gate.shape, up.shape) && f32(gate, up) && native(SWIGLU)) return run<T>(SWIGLU, { gate, up })
  return tf.mul(tf.mul(gate, tf.sigmoid(gate)), up)
}

/**
 * Rotary embedding, rotate-half form: `y = x ⊙ cos + rotate_half(x) ⊙ sin`, `rotate_half(x) = [−x₂, x₁]` (the
 * halves of the last axis); x `[B, T, H, hd]`, cos and sin broadcastable to it (the kernel takes `[1 or B, T, 1, hd]`).
 * `rotate` is the `[hd, hd]` ±1 matrix with `x · rotate = rotate_half(x)`, used only by the composite (the form the
 * model always ran). Differentiable in x (and, through composites, in cos and sin).
 */
export const rope = (x: tf.Tensor4D, cos: tf.Tensor, sin: tf.Tensor, rotate: tf.Tensor2D): tf.Tensor4D => {
  const [b, t, , hd] = x.shape
  const fits = cos.rank === 4 && tf.util.arraysEqual(cos.shape, sin.shape) && (cos.shape[0] === 1 || cos.shape[0] === b) &&
    cos.shape[1] === t && cos.shape[2] === 1 && cos.shape[3] === hd && hd % 2 === 0
  if (x.size > 0 && fits && f32(x, cos, sin) && native(ROPE)) return run<tf.Tensor4D>(ROPE, { x, cos, sin })
  const rotated = tf.reshape(tf.matMul(tf.reshape(x, [-1, hd]) as tf.Tensor2D, rotate), x.shape)
  return tf.add(tf.mul(x, cos), tf.mul(rotated, sin))
}

// ---------------------------------------------------------------------------------------------------
// Gradients: one native kernel computes every input's gradient at once, eagerly in gradFunc (a closure run
// inside the tape's per-input tidy could not hand a second tensor to the next closure).

tf.registerGradient({
  kernelName: RMS_NORM,
  inputsToSave: ["x", "g"],
  gradFunc: (dy, saved, attrs) => {
    const [x, g] = saved
    const [dx, dg] = run<Array<tf.Tensor>>(RMS_NORM_GRAD, { dy: dy as tf.Tensor, x, g }, { eps: (attrs as unknown as { eps: number }).eps })
    return { x: () => dx, g: () => dg }
  }
})

tf.registerGradient({
  kernelName: SWIGLU,
  inputsToSave: ["gate", "up"],
  gradFunc: (dy, saved) => {
    const [gate, up] = saved
    const [dGate, dUp] = run<Array<tf.Tensor>>(SWIGLU_GRAD, { dy: dy as tf.Tensor, gate, up })
    return { gate: () => dGate, up: () => dUp }
  }
})

/** `rotate_half(x)` by slices, for the rarely needed gradients wrt cos / sin. */
const rotateHalf = (x: tf.Tensor): tf.Tensor => {
  const half = x.shape[x.rank - 1] / 2
  return tf.concat([tf.neg(tf.slice(x, x.shape.map((_, i) => (i === x.rank - 1 ? half : 0)))), tf.slice(x, x.shape.map(() => 0), x.shape.map((d, i) => (i === x.rank - 1 ? half : d)))], -1)
}

/** Σ of a gradient over the axes `shape` was broadcast along. */
const sumTo = (dx: tf.Tensor, shape: Array<number>): tf.Tensor =>
  tf.reshape(tf.sum(dx, tf.broadcast_util.getReductionAxes(shape, dx.shape), true), shape)

tf.registerGradient({
  kernelName: ROPE,
  inputsToSave: ["x", "cos", "sin"],
  gradFunc: (dy, saved) => {
    const [x, cos, sin] = saved
    const d = dy as tf.Tensor
    const dx = run<tf.Tensor>(ROPE_GRAD, { dy: d, cos, sin })
    return { x: () => dx, cos: () => sumTo(tf.mul(d, x), cos.shape), sin: () => sumTo(tf.mul(d, rotateHalf(x)), sin.shape) }
  }
})

// ---------------------------------------------------------------------------------------------------
// Kernels on the backend's memory (`Memory`). Outputs are allocated before the heap is read: a wasm allocation can
// grow (replace) it.
const rowsOf = (shape: ReadonlyArray<number>) => shape.slice(0, -1).reduce((p, d) => p * d, 1)

/** The native kernels of this module, by kernel name, for `Kernels.install`. */
export const kernels = (addon: Addon): ReadonlyArray<readonly [string, tf.KernelFunc]> => {
  const a = addon as unknown as FusedAddon
  const rmsNormK: tf.KernelFunc = ({ inputs, backend, attrs }) => {
    const mem = Memory.of(backend, addon)
    const { x, g } = inputs as { x: tf.TensorInfo; g: tf.TensorInfo }
    const y = mem.output(x.shape, "float32")
    a.rmsNorm(mem.heap(), mem.offset(x), mem.offset(g), mem.offset(y), rowsOf(x.shape), x.shape[x.shape.length - 1], (attrs as unknown as { eps: number }).eps)
    return y
  }
  const rmsNormGradK: tf.KernelFunc = ({ inputs, backend, attrs }) => {
    const mem = Memory.of(backend, addon)
    const { dy, x, g } = inputs as { dy: tf.TensorInfo; x: tf.TensorInfo; g: tf.TensorInfo }
    const dx = mem.output(x.shape, "float32"), dg = mem.output(g.shape, "float32")
    a.rmsNormGrad(mem.heap(), mem.offset(dy), mem.offset(x), mem.offset(g), mem.offset(dx), mem.offset(dg), rowsOf(x.shape), g.shape[0],
      (attrs as unknown as { eps: number }).eps)
    return [dx, dg]
  }
  const swigluK: tf.KernelFunc = ({ inputs, backend }) => {
    const mem = Memory.of(backend, addon)
    const { gate, up } = inputs as { gate: tf.TensorInfo; up: tf.TensorInfo }
    const y = mem.output(gate.shape, "float32")
    a.swiglu(mem.heap(), mem.offset(gate), mem.offset(up), mem.offset(y), rowsOf(gate.shape) * (gate.shape.at(-1) ?? 1))
    return y
  }
  const swigluGradK: tf.KernelFunc = ({ inputs, backend }) => {
    const mem = Memory.of(backend, addon)
    const { dy, gate, up } = inputs as { dy: tf.TensorInfo; gate: tf.TensorInfo; up: tf.TensorInfo }
    const dGate = mem.output(gate.shape, "float32"), dUp = mem.output(up.shape, "float32")
    a.swigluGrad(mem.heap(), mem.offset(dy), mem.offset(gate), mem.offset(up), mem.offset(dGate), mem.offset(dUp), rowsOf(gate.shape) * (gate.shape.at(-1) ?? 1))
    return [dGate, dUp]
  }
  // Forward maps x to y, backward dy to dx: the same walk over [B, T, H, hd] with the rotation transposed.
  const ropeK = (backward: 0 | 1): tf.KernelFunc => ({ inputs, backend }) => {
    const mem = Memory.of(backend, addon)
    const { cos, sin } = inputs as { cos: tf.TensorInfo; sin: tf.TensorInfo }
    const x = (backward ? inputs.dy : inputs.x) as tf.TensorInfo
    const [b, t, h, hd] = x.shape
    const y = mem.output(x.shape, "float32")
    a.rope(mem.heap(), mem.offset(x), mem.offset(cos), mem.offset(sin), mem.offset(y), b, t, h, hd, cos.shape[0], backward)
    return y
  }
  return [
    [RMS_NORM, rmsNormK],
    [RMS_NORM_GRAD, rmsNormGradK],
    [SWIGLU, swigluK],
    [SWIGLU_GRAD, swigluGradK],
    [ROPE, ropeK(0)],
    [ROPE_GRAD, ropeK(1)]
  ]
}
