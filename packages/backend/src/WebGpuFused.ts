/**
 * WGSL kernels for the `webgpu` backend behind `@r1flow/kernels`' fused SwiGLU and RoPE (`Fused.swiglu`,
 * `Fused.rope`), registered by `WebGpuKernels.install` under the names those ops look up, with the native
 * kernels' inputs and outputs.
 *
 * SwiGLU, elementwise over gate and up of one shape, s = σ(gate) = 1 / (1 + e^−gate):
 *   y = gate · s · up
 *   dGate = dy · up · s · (1 + gate · (1 − s)),  dUp = dy · gate · s
 * RoPE, rotate-half form, x `[B, T, H, hd]`, cos and sin `[1 or B, T, 1, hd]`, halves i < hd/2 and i + hd/2:
 *   y_i = x_i c_i − x_{i+hd/2} s_i,          y_{i+hd/2} = x_{i+hd/2} c_{i+hd/2} + x_i s_{i+hd/2}
 *   dx_i = dy_i c_i + dy_{i+hd/2} s_{i+hd/2},  dx_{i+hd/2} = dy_{i+hd/2} c_{i+hd/2} − dy_i s_i
 * Every kernel is one thread per output element over the flattened tensor (tfjs folds a dispatch of more than
 * 65535 workgroups into two or three dimensions); SwiGLU's backward is two programs (a tfjs program has one
 * output), each recomputing σ, which is cheaper than a second pass over a saved σ.
 */
import * as tf from "@tensorflow/tfjs"
import type { WebGPUBackend, WebGPUProgram } from "@tensorflow/tfjs-backend-webgpu"
import type { Uniform } from "./WebGpuProgram.js"

const WG = 128


/**
 * One thread per element of an `[n]` output: `body` sets `result[index]` from the inputs `variableNames`
 * (flat arrays) and `uniforms.*` (declared by `uniformDecl`), for `index < uniforms.size`.
 */
export const elementwise = (shaderKey: string, variableNames: Array<string>, n: number, uniformDecl: string, body: string): WebGPUProgram => ({
  variableNames,
  outputShape: [n],
  shaderKey,
  size: true,
  uniforms: uniformDecl,
  workgroupSize: [WG, 1, 1],
  dispatchLayout: { x: [0] },
  dispatch: [Math.ceil(n / WG), 1, 1],
  getUserCode: () => `
    fn main(index : i32) {
      if (index < uniforms.size) {
        ${body}
      }
    }`
})

/** `t` seen as a flat `[n]` tensor (the same buffer): the programs index elements, whatever the rank. */
export const flat = (t: tf.TensorInfo): tf.TensorInfo => ({ ...t, shape: [tf.util.sizeFromShape(t.shape)] })

/** Runs `program` on `inputs` (flattened) and gives its output the shape `shape`. */
export const runFlat = (backend: unknown, program: WebGPUProgram, inputs: Array<tf.TensorInfo>, shape: Array<number>, u?: Array<Uniform>): tf.TensorInfo => {
  const out = (backend as unknown as WebGPUBackend).runWebGPUProgram(program, inputs.map(flat), "float32", u)
  return { ...out, shape }
}

// σ as tfjs's Sigmoid computes it, so the forward matches the composite's bits.
const SIGMA = "let gt = gate[index]; let s = 1.0 / (1.0 + exp(-1.0 * gt));"

const swiglu: tf.KernelFunc = ({ inputs, backend }) => {
  const { gate, up } = inputs as { gate: tf.TensorInfo; up: tf.TensorInfo }
  const n = tf.util.sizeFromShape(gate.shape)
  return runFlat(backend, elementwise("r1_swiglu", ["gate", "up"], n, "", `${SIGMA} result[index] = gt * s * up[index];`), [gate, up], [...gate.shape])
}

const swigluGrad: tf.KernelFunc = ({ inputs, backend }) => {
  const { dy, gate, up } = inputs as { dy: tf.TensorInfo; gate: tf.TensorInfo; up: tf.TensorInfo }
  const n = tf.util.sizeFromShape(gate.shape), shape = [...gate.shape]
  const dGate = elementwise("r1_swiglu_dgate", ["dy", "gate", "up"], n, "", `${SIGMA} result[index] = dy[index] * up[index] * (s * (1.0 + gt * (1.0 - s)));`)
  const dUp = elementwise("r1_swiglu_dup", ["dy", "gate"], n, "", `${SIGMA} result[index] = dy[index] * (gt * s);`)
  return [runFlat(backend, dGate, [dy, gate, up], shape), runFlat(backend, dUp, [dy, gate], shape)]
}

// hd, H·hd (elements per (b, t) row) and the rows of cos / sin (T when shared by the batch, B·T otherwise):
// row r of x takes row r mod cosRows of cos and sin.
const ROPE_UNIFORMS = "hd : i32, rowSize : i32, cosRows : i32,"

/** Forward maps x to y, backward dy to dx: the same walk with the rotation transposed. */
const ropeProgram = (backward: boolean, n: number): WebGPUProgram => {
  const [lo, hi] = backward ? ["+ x[index + half] * st[k + half]", "- x[index - half] * st[k - half]"] : ["- x[index + half] * st[k]", "+ x[index - half] * st[k]"]
  return elementwise(backward ? "r1_rope_dx" : "r1_rope", ["x", "ct", "st"], n, ROPE_UNIFORMS, `
        let hd = uniforms.hd;
        let half = hd / 2;
        let j = index % hd;
        let k = (index / uniforms.rowSize) % uniforms.cosRows * hd + j;
        if (j < half) { result[index] = x[index] * ct[k] ${lo}; } else { result[index] = x[index] * ct[k] ${hi}; }`)
}

const rope = (backward: boolean): tf.KernelFunc => ({ inputs, backend }) => {
  const { cos, sin } = inputs as { cos: tf.TensorInfo; sin: tf.TensorInfo }
  const x = (backward ? inputs.dy : inputs.x) as tf.TensorInfo // [B, T, H, hd]
  const [b, t, h, hd] = x.shape
  const u: Array<Uniform> = [{ type: "int32", data: [hd] }, { type: "int32", data: [h * hd] }, { type: "int32", data: [cos.shape[0] === 1 ? t : b * t] }]
  return runFlat(backend, ropeProgram(backward, tf.util.sizeFromShape(x.shape)), [x, cos, sin], [...x.shape], u)
}

/** The SwiGLU and RoPE kernels, by the kernel names `Fused` looks up. */
export const kernels: ReadonlyArray<readonly [string, tf.KernelFunc]> = [
  ["R1Swiglu", swiglu],
  ["R1SwigluGrad", swigluGrad],
  ["R1Rope", rope(false)],
  ["R1RopeGrad", rope(true)]
]
