/**
 * The WGSL kernel behind `@r1flow/kernels`' `AdamW.update` on the `webgpu` backend, `R1AdamW` (inputs p, m, v, g;
 * attrs `AdamW.Hyper`; outputs [θ', m', v']):
 *
 *   g ← g·s    m' = m·β1 + g·(1 − β1)    v' = v·β2 + g²·(1 − β2)    θ' = θ·d − ((m' / c1) / (√(v' / c2) + ε))·lr
 *
 * in the composite's float32 order of operations. Three programs, as a tfjs program has one output: m' from
 * (m, g), v' from (v, g), then θ' from (θ, m', v'), reading the moments just written rather than recomputing
 * them: 7 reads and 3 writes per element, against the composite's ~12 kernels of 2–3 passes each. s = 1 and
 * d = 1 multiply exactly, so they need no variant. WGSL does not forbid contracting a·b + c into a fused
 * multiply-add, which the composite (one kernel per operation, each rounded to float32 in memory) cannot do;
 * the tests measure the difference.
 */
import type * as tf from "@tensorflow/tfjs"
import { elementwise, runFlat } from "./WebGpuFused.js"
import type { Uniform } from "./WebGpuProgram.js"
// Types only: erased, so the kernels package still loads lazily.
import type { AdamW } from "@r1flow/kernels"

const UNIFORMS = "b1 : f32, nb1 : f32, b2 : f32, nb2 : f32, c1 : f32, c2 : f32, eps : f32, decay : f32, lr : f32, scale : f32,"

// 1 − β computed in float64 and rounded once, as the composite's `tf.mul(g, 1 − β1)` does.
const uniformsOf = (h: AdamW.Hyper): Array<Uniform> =>
  [h.beta1, 1 - h.beta1, h.beta2, 1 - h.beta2, h.c1, h.c2, h.epsilon, h.decay, h.learningRate, h.scale].map((x) => ({ type: "float32", data: [x] }))

const moment1 = (n: number) =>
  elementwise("r1_adamw_m", ["m", "g"], n, UNIFORMS, "let gs = g[index] * uniforms.scale; result[index] = m[index] * uniforms.b1 + gs * uniforms.nb1;")

const moment2 = (n: number) =>
  elementwise("r1_adamw_v", ["v", "g"], n, UNIFORMS, "let gs = g[index] * uniforms.scale; result[index] = v[index] * uniforms.b2 + (gs * gs) * uniforms.nb2;")

// p, m', v' → θ'
const weight = (n: number) =>
  elementwise("r1_adamw_p", ["p", "m1", "v1"], n, UNIFORMS, `
        let update = (m1[index] / uniforms.c1) / (sqrt(v1[index] / uniforms.c2) + uniforms.eps);
        result[index] = p[index] * uniforms.decay - update * uniforms.lr;`)

const adamw: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const { p, m, v, g } = inputs as Record<"p" | "m" | "v" | "g", tf.TensorInfo>
  const n = p.shape.reduce((a, d) => a * d, 1), shape = [...p.shape]
  const u = uniformsOf(attrs as unknown as AdamW.Hyper)
  const m1 = runFlat(backend, moment1(n), [m, g], shape, u)
  const v1 = runFlat(backend, moment2(n), [v, g], shape, u)
  return [runFlat(backend, weight(n), [p, m1, v1], shape, u), m1, v1]
}

/** The AdamW kernel, by the name `AdamW.update` looks up. */
export const kernels: ReadonlyArray<readonly [string, tf.KernelFunc]> = [["R1AdamW", adamw]]
