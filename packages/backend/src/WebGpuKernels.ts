/**
 * WGSL kernels for the `webgpu` backend, registered in tfjs's registry under the names `@r1flow/kernels`' fused
 * ops look up (`Fused.rmsNorm` runs `R1RmsNorm` where it is registered for the current backend, the composite
 * otherwise; its gradient, registered there, runs `R1RmsNormGrad`).
 *
 * RMSNorm (Zhang & Sennrich 2019), over the last axis of x `[N, C]` (any leading dims), g `[C]`:
 *   r_i = 1 / sqrt(mean_j x_ij² + ε),  y_ij = x_ij · r_i · g_j
 *   dx_ij = r_i · g_j · dy_ij − x_ij · r_i³ / C · Σ_k dy_ik g_k x_ik,  dg_j = Σ_i dy_ij · x_ij · r_i
 * Forward: one workgroup per row (a tree sum of x² in workgroup memory, then the row written). Backward: r per
 * row (same reduction), then dx (one workgroup per row, the Σ dy·g·x reduction) and dg (one thread per column
 * over all rows): three programs, since a tfjs program has one output.
 */
import * as tf from "@tensorflow/tfjs"
import type { WebGPUBackend, WebGPUProgram } from "@tensorflow/tfjs-backend-webgpu"
import * as Program from "./WebGpuProgram.js"
import { WG } from "./WebGpuProgram.js"
import * as WebGpuAttention from "./WebGpuAttention.js"
import * as WebGpuDecode from "./WebGpuDecode.js"
import * as WebGpuAdamW from "./WebGpuAdamW.js"
import * as WebGpuFused from "./WebGpuFused.js"


const rowsOf = (shape: ReadonlyArray<number>) => shape.slice(0, -1).reduce((p, d) => p * d, 1)

const uniforms = (rows: number, c: number, eps: number): Array<Program.Uniform> =>
  [{ type: "int32", data: [rows] }, { type: "int32", data: [c] }, { type: "float32", data: [eps] }]
const UNIFORMS = "rows : i32, c : i32, eps : f32,"

/** One workgroup per row; `body` runs after `partial[0]` holds Σ_j `term` over the row. */
const perRow = (shaderKey: string, variableNames: Array<string>, outputShape: Array<number>, rows: number, term: string, body: string): WebGPUProgram => Program.perRow({
  variableNames,
  outputShape,
  shaderKey,
  uniforms: UNIFORMS,
  code: `
    var<workgroup> partial : array<f32, ${WG}>;
    fn main(index : i32) {
      ${Program.ROW}
      let t = i32(localId.x);
      let c = uniforms.c;
      let base = row * c;
      var s = 0.0;
      if (row < uniforms.rows) {
        for (var j = t; j < c; j += ${WG}) { s += ${term}; }
      }
      partial[t] = s;
      workgroupBarrier();
      for (var k = ${WG / 2}; k > 0; k >>= 1) {
        if (t < k) { partial[t] += partial[t + k]; }
        workgroupBarrier();
      }
      let total = partial[0];
      if (row < uniforms.rows) {
        ${body}
      }
    }`
}, rows)

// y = x · r · g  [N, C]
const forward = (rows: number, shape: Array<number>) =>
  perRow("r1_rmsnorm", ["x", "g"], shape, rows, "x[base + j] * x[base + j]", `
        let r = inverseSqrt(total / f32(c) + uniforms.eps);
        for (var j = t; j < c; j += ${WG}) { result[base + j] = x[base + j] * r * g[j]; }`)

// r_i  [N]
const rowRsqrt = (rows: number) =>
  perRow("r1_rmsnorm_r", ["x"], [rows], rows, "x[base + j] * x[base + j]", `
        if (t == 0) { result[row] = inverseSqrt(total / f32(c) + uniforms.eps); }`)

// dx  [N, C]
const gradX = (rows: number, shape: Array<number>) =>
  perRow("r1_rmsnorm_dx", ["dy", "x", "g", "r"], shape, rows, "dy[base + j] * g[j] * x[base + j]", `
        let ri = r[row];
        let k3 = ri * ri * ri * total / f32(c);
        for (var j = t; j < c; j += ${WG}) { result[base + j] = ri * g[j] * dy[base + j] - x[base + j] * k3; }`)

// dg  [C]: one thread per column, rows in order
const gradG = (rows: number, c: number): WebGPUProgram => Program.perThread({
  variableNames: ["dy", "x", "r"],
  outputShape: [c],
  shaderKey: "r1_rmsnorm_dg",
  uniforms: UNIFORMS,
  code: `
    fn main(index : i32) {
      let c = uniforms.c;
      if (index < c) {
        var s = 0.0;
        for (var i = 0; i < uniforms.rows; i++) { s += dy[i * c + index] * x[i * c + index] * r[i]; }
        result[index] = s;
      }
    }`
}, c)

const RMS_NORM = "R1RmsNorm"
const RMS_NORM_GRAD = "R1RmsNormGrad"

const epsOf = (attrs: tf.NamedAttrMap | undefined) => (attrs as unknown as { eps: number }).eps

const rmsNorm: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const be = backend as unknown as WebGPUBackend
  const { x, g } = inputs as { x: tf.TensorInfo; g: tf.TensorInfo }
  const rows = rowsOf(x.shape), c = x.shape[x.shape.length - 1]
  return be.runWebGPUProgram(forward(rows, [...x.shape]), [x, g], "float32", uniforms(rows, c, epsOf(attrs)))
}

const rmsNormGrad: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const be = backend as unknown as WebGPUBackend
  const { dy, x, g } = inputs as { dy: tf.TensorInfo; x: tf.TensorInfo; g: tf.TensorInfo }
  const rows = rowsOf(x.shape), c = x.shape[x.shape.length - 1]
  const u = uniforms(rows, c, epsOf(attrs))
  const r = be.runWebGPUProgram(rowRsqrt(rows), [x], "float32", u)
  const dx = be.runWebGPUProgram(gradX(rows, [...x.shape]), [dy, x, g, r], "float32", u)
  const dg = be.runWebGPUProgram(gradG(rows, c), [dy, x, r], "float32", u)
  be.disposeData(r.dataId)
  return [dx, dg]
}

const kernels: ReadonlyArray<readonly [string, tf.KernelFunc]> = [
  [RMS_NORM, rmsNorm], [RMS_NORM_GRAD, rmsNormGrad], ...WebGpuFused.kernels, ...WebGpuAdamW.kernels, ...WebGpuAttention.kernels, ...WebGpuDecode.kernels
]

/** Registers the WGSL kernels for `webgpu` (idempotent) and names them. */
export const install = (): ReadonlyArray<string> => {
  for (const [kernelName, kernelFunc] of kernels) {
    if (tf.getKernel(kernelName, "webgpu") === undefined) tf.registerKernel({ kernelName, backendName: "webgpu", kernelFunc })
  }
  return kernels.map(([name]) => name)
}

/** Unregisters them, so the fused ops run their composites (tests compare the two). */
export const uninstall = (): void => {
  for (const [kernelName] of kernels) if (tf.getKernel(kernelName, "webgpu") !== undefined) tf.unregisterKernel(kernelName, "webgpu")
}
