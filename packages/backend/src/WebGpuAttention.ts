/**
 * WGSL kernels behind `Attention.causal` for the `webgpu` backend (`R1CausalAttention`, `R1CausalAttentionGrad`),
 * with the native kernels' inputs, attrs and outputs (packages/kernels/native/attention.c).
 *
 *   O = softmax(Q Kᵀ + M) V,  per (batch, kv head): Q [G·T, hd] (row g·T + t), K, V [S, hd], S = past + T
 *
 * Query row g·T + t sees keys s ≤ past + t only (the later ones are never read; M hides them and may hide more).
 * Flash-attention style, no [G·T, S] tensor is kept: the forward writes O and each row's log-sum-exp
 *   L_r = log Σ_s exp(q_r·k_s + m_rs),  P_rs = exp(q_r·k_s + m_rs − L_r)
 * and the backward recomputes P from L. With D_r = Σ_d dO_rd O_rd and dS_rs = P_rs (dO_r·v_s − D_r):
 *   dQ_r = Σ_s dS_rs k_s,  dK_s = Σ_r dS_rs q_r,  dV_s = Σ_r P_rs dO_r
 * A tfjs program has one output, so these are six programs: L, O (forward); D, dQ, dK, dV (backward), each at
 * most 7 inputs + 1 output (WebGPU binds 8 storage buffers a shader). L, O and dQ run one 64-thread workgroup
 * per query row, dK and dV one per key row (over the G·(T − max(0, s − past)) query rows that see key s):
 * threads take keys (or query rows) 64 at a time, each one dot product over hd, the weights go to workgroup
 * memory, and then each thread sums its output column over them (column blocks of 64 for hd > 64).
 *
 * Faster tiling (not done: correctness first): blocks of Br query rows × Bc keys per workgroup with Q, K, V
 * tiles in workgroup memory and an online softmax across key blocks (FlashAttention-2), skipping the key
 * blocks past the causal diagonal; the backward per key block, accumulating dK, dV in registers over the
 * query blocks and dQ with atomics or a second pass. Here every k_s / v_s row is read once per query row.
 */
import * as tf from "@tensorflow/tfjs"
import type { WebGPUBackend, WebGPUProgram } from "@tensorflow/tfjs-backend-webgpu"
import * as Program from "./WebGpuProgram.js"
import { WG } from "./WebGpuProgram.js"

// Below any score (scores are finite: the mask hides with −1e9), and exp of it minus a score is 0.
const NEG = "-3.0e38"

const FORWARD = "R1CausalAttention"
const BACKWARD = "R1CausalAttentionGrad"

/** The sizes the programs take, as `Attention.causal`'s `layout` has already checked them. */
interface Sizes {
  readonly B: number
  readonly H: number
  readonly G: number
  readonly T: number
  readonly past: number
  readonly hd: number
  readonly S: number
  /** Mask element strides over batch and kv head, 0 where it broadcasts. */
  readonly msb: number
  readonly msh: number
}

const sizesOf = (q: tf.TensorInfo, k: tf.TensorInfo, mask: tf.TensorInfo, past: number): Sizes => {
  const [B, H, rows, hd] = q.shape
  const S = k.shape[2], T = S - past
  const [mb, mh] = [...new Array<number>(4 - mask.shape.length).fill(1), ...mask.shape]
  return { B, H, G: rows / T, T, past, hd, S, msb: mb === 1 ? 0 : mh * rows * S, msh: mh === 1 ? 0 : rows * S }
}

const UNIFORMS = "nH : i32, nG : i32, nT : i32, past : i32, hd : i32, nS : i32, msb : i32, msh : i32, rows : i32,"
const uniforms = (z: Sizes, rows: number) =>
  [z.H, z.G, z.T, z.past, z.hd, z.S, z.msb, z.msh, rows].map((v) => ({ type: "int32" as const, data: [v] }))

/** One workgroup per row of the output (`Program.perRow`), with this module's uniforms. */
const perRow = (shaderKey: string, variableNames: Array<string>, outputShape: Array<number>, rows: number, code: string): WebGPUProgram =>
  Program.perRow({ shaderKey, variableNames, outputShape, uniforms: UNIFORMS, code }, rows)

// The query row of this workgroup and where its operands start; n: the keys it sees (0 past the last row),
// loaded uniformly, since the loops over keys hold barriers.
const QUERY_ROW = `
      ${Program.ROW}
      let lid = i32(localId.x);
      let hd = uniforms.hd;
      let nS = uniforms.nS;
      let gt = uniforms.nG * uniforms.nT;
      let qr = min(row, uniforms.rows - 1);
      let pair = qr / gt;
      let r = qr - pair * gt;
      let b = pair / uniforms.nH;
      let q0 = qr * hd;
      let k0 = pair * nS * hd;
      let m0 = b * uniforms.msb + (pair - b * uniforms.nH) * uniforms.msh + r * nS;
      if (lid == 0) { wn = select(0, uniforms.past + r % uniforms.nT + 1, row < uniforms.rows); }
      let n = workgroupUniformLoad(&wn);`

const SHARED = `
    var<workgroup> wn : i32;
    var<workgroup> wp : array<f32, ${WG}>;
    var<workgroup> wl : array<f32, ${WG}>;`

// L [B, Hkv, G·T]: per thread a running max and sum over its keys, then a tree merge of the (max, sum) pairs.
const logSumExp = (rows: number, shape: Array<number>) =>
  perRow("r1_attention_lse", ["q", "k", "mask"], shape, rows, `${SHARED}
    fn main(index : i32) {
      ${QUERY_ROW}
      var mx = ${NEG};
      var l = 0.0;
      for (var j = lid; j < n; j += ${WG}) {
        var s = 0.0;
        for (var d = 0; d < hd; d++) { s += q[q0 + d] * k[k0 + j * hd + d]; }
        s += mask[m0 + j];
        let top = max(mx, s);
        l = l * exp(mx - top) + exp(s - top);
        mx = top;
      }
      wp[lid] = mx;
      wl[lid] = l;
      workgroupBarrier();
      for (var w = ${WG / 2}; w > 0; w >>= 1) {
        if (lid < w) {
          let a = wp[lid];
          let c = wp[lid + w];
          let top = max(a, c);
          wl[lid] = wl[lid] * exp(a - top) + wl[lid + w] * exp(c - top);
          wp[lid] = top;
        }
        workgroupBarrier();
      }
      if (lid == 0 && row < uniforms.rows) { result[row] = wp[0] + log(wl[0]); }
    }`)

// dO_a · v_b over hd (a, b: element offsets of the rows)
const DYV = `
    fn dyv(a : i32, b : i32, hd : i32) -> f32 {
      var s = 0.0;
      for (var d = 0; d < hd; d++) { s += dy[a + d] * v[b + d]; }
      return s;
    }`

/**
 * A query-row program [B, Hkv, G·T, hd]: result_rd = Σ_{j < n} weight_j · src[k0 + j·hd + d], `weight` a WGSL
 * expression of the key j and its probability p (P_rj) that may call the WGSL functions `fns`.
 */
const overKeys = (shaderKey: string, variableNames: Array<string>, rows: number, shape: Array<number>, weight: string, src: string, fns = "") =>
  perRow(shaderKey, variableNames, shape, rows, `${SHARED}${fns}
    fn main(index : i32) {
      ${QUERY_ROW}
      let lr = lse[qr];
      for (var c0 = 0; c0 < hd; c0 += ${WG}) {
        let col = c0 + lid;
        var acc = 0.0;
        for (var j0 = 0; j0 < n; j0 += ${WG}) {
          let j = j0 + lid;
          var wj = 0.0;
          if (j < n) {
            var s = 0.0;
            for (var d = 0; d < hd; d++) { s += q[q0 + d] * k[k0 + j * hd + d]; }
            let p = exp(s + mask[m0 + j] - lr);
            wj = ${weight};
          }
          wp[lid] = wj;
          workgroupBarrier();
          if (col < hd) {
            let m = min(${WG}, n - j0);
            for (var u = 0; u < m; u++) { acc += wp[u] * ${src}[k0 + (j0 + u) * hd + col]; }
          }
          workgroupBarrier();
        }
        if (col < hd && row < uniforms.rows) { result[q0 + col] = acc; }
      }
    }`)

// O = P V
const output = (rows: number, shape: Array<number>) => overKeys("r1_attention_o", ["q", "k", "v", "mask", "lse"], rows, shape, "p", "v")

// D_r = Σ_d dO_rd O_rd  [B, Hkv, G·T]: one thread per row.
const rowDot = (rows: number, shape: Array<number>): WebGPUProgram => Program.perThread({
  variableNames: ["o", "dy"],
  outputShape: shape,
  shaderKey: "r1_attention_d",
  uniforms: UNIFORMS,
  code: `
    fn main(index : i32) {
      if (index < uniforms.rows) {
        var s = 0.0;
        for (var d = 0; d < uniforms.hd; d++) { s += dy[index * uniforms.hd + d] * o[index * uniforms.hd + d]; }
        result[index] = s;
      }
    }`
}, rows)

// dQ = dS K, dS_rj = P_rj (dO_r·v_j − D_r)
const gradQ = (rows: number, shape: Array<number>) =>
  overKeys("r1_attention_dq", ["q", "k", "v", "mask", "lse", "dy", "rowDot"], rows, shape, "p * (dyv(q0, k0 + j * hd, hd) - rowDot[qr])", "k", DYV)

/**
 * A key-row program [B, Hkv, S, hd]: result_sd = Σ_r weight_r · src[qrow_r·hd + d] over the query rows r that
 * see key s (t ≥ s − past, every group), `weight` a WGSL expression of r's probability p (P_rs) and `qrow` that
 * may call the WGSL functions `fns`.
 */
const overQueries = (shaderKey: string, variableNames: Array<string>, rows: number, shape: Array<number>, weight: string, src: string, fns = "") =>
  perRow(shaderKey, variableNames, shape, rows, `${SHARED}${fns}
    var<workgroup> wr : array<i32, ${WG}>;
    fn main(index : i32) {
      ${Program.ROW}
      let lid = i32(localId.x);
      let hd = uniforms.hd;
      let nS = uniforms.nS;
      let nT = uniforms.nT;
      let gt = uniforms.nG * nT;
      let kr = min(row, uniforms.rows - 1);
      let pair = kr / nS;
      let s = kr - pair * nS;
      let b = pair / uniforms.nH;
      let k0 = kr * hd;
      let m0 = b * uniforms.msb + (pair - b * uniforms.nH) * uniforms.msh + s;
      let t0 = max(0, s - uniforms.past);
      let nt = nT - t0;
      if (lid == 0) { wn = select(0, uniforms.nG * nt, row < uniforms.rows); }
      let n = workgroupUniformLoad(&wn);
      for (var c0 = 0; c0 < hd; c0 += ${WG}) {
        let col = c0 + lid;
        var acc = 0.0;
        for (var u0 = 0; u0 < n; u0 += ${WG}) {
          let u = u0 + lid;
          var wu = 0.0;
          var qrow = 0;
          if (u < n) {
            let g = u / nt;
            let r = g * nT + t0 + u - g * nt;
            qrow = pair * gt + r;
            var sc = 0.0;
            for (var d = 0; d < hd; d++) { sc += q[qrow * hd + d] * k[k0 + d]; }
            let p = exp(sc + mask[m0 + r * nS] - lse[qrow]);
            wu = ${weight};
          }
          wp[lid] = wu;
          wr[lid] = qrow;
          workgroupBarrier();
          if (col < hd) {
            let m = min(${WG}, n - u0);
            for (var i = 0; i < m; i++) { acc += wp[i] * ${src}[wr[i] * hd + col]; }
          }
          workgroupBarrier();
        }
        if (col < hd && row < uniforms.rows) { result[k0 + col] = acc; }
      }
    }`)

// dK = dSᵀ Q
const gradK = (rows: number, shape: Array<number>) =>
  overQueries("r1_attention_dk", ["q", "k", "v", "mask", "lse", "dy", "rowDot"], rows, shape, "p * (dyv(qrow * hd, k0, hd) - rowDot[qrow])", "q", DYV)

// dV = Pᵀ dO
const gradV = (rows: number, shape: Array<number>) => overQueries("r1_attention_dv", ["q", "k", "mask", "lse", "dy"], rows, shape, "p", "dy")

const pastOf = (attrs: tf.NamedAttrMap | undefined) => (attrs as unknown as { past: number }).past

const forward: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const be = backend as unknown as WebGPUBackend
  const { q, k, v, mask } = inputs as Record<"q" | "k" | "v" | "mask", tf.TensorInfo>
  const z = sizesOf(q, k, mask, pastOf(attrs))
  const rows = z.B * z.H * z.G * z.T
  const u = uniforms(z, rows)
  const lse = be.runWebGPUProgram(logSumExp(rows, q.shape.slice(0, 3)), [q, k, mask], "float32", u) // [B, Hkv, G·T]
  const o = be.runWebGPUProgram(output(rows, [...q.shape]), [q, k, v, mask, lse], "float32", u) // [B, Hkv, G·T, hd]
  return [o, lse]
}

const backward: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const be = backend as unknown as WebGPUBackend
  const { q, k, v, mask, o, lse, dy } = inputs as Record<"q" | "k" | "v" | "mask" | "o" | "lse" | "dy", tf.TensorInfo>
  const z = sizesOf(q, k, mask, pastOf(attrs))
  const rows = z.B * z.H * z.G * z.T, keys = z.B * z.H * z.S
  const d = be.runWebGPUProgram(rowDot(rows, lse.shape.slice()), [o, dy], "float32", uniforms(z, rows)) // [B, Hkv, G·T]
  const dq = be.runWebGPUProgram(gradQ(rows, [...q.shape]), [q, k, v, mask, lse, dy, d], "float32", uniforms(z, rows))
  const dk = be.runWebGPUProgram(gradK(keys, [...k.shape]), [q, k, v, mask, lse, dy, d], "float32", uniforms(z, keys))
  const dv = be.runWebGPUProgram(gradV(keys, [...v.shape]), [q, k, mask, lse, dy], "float32", uniforms(z, keys))
  be.disposeData(d.dataId)
  return [dq, dk, dv]
}

/** The attention kernels for `webgpu`, by the names `Attention.causal` and its gradient look up. */
export const kernels: ReadonlyArray<readonly [string, tf.KernelFunc]> = [[FORWARD, forward], [BACKWARD, backward]]
