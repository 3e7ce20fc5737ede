/**
 * WGSL kernels behind `Decode` for the `webgpu` backend: the decode attention (`R1DecodeAttention`) and the
 * in-place cache write (`R1CacheWrite`), with the native kernels' inputs, attrs and outputs
 * (packages/kernels/native/decode.c, `Decode.writeKernel`). `Decode.available()` gates both: both or neither.
 *
 * Attention, for each row b, kv head h and query row g of q [B, Hkv, G, hd], over the Sp keys of the prompt
 * p = promptOf[b] and then the row's first S own keys (of C ≥ S slots):
 *   z_j = q·pk[p, h, j] + bias[b, j]  (j < Sp),   z_{Sp+s} = q·k[b, h, s] + mask[b, g, s]
 *   o = Σ_j softmax(z)_j · [pv[p, h] ++ v[b, h]]_j
 * Two programs, since the eight inputs and the output are more than the 8 storage buffers a shader binds:
 * the scores z [B, Hkv, G, Sp + S] (one thread each), then o (one 64-thread workgroup per query row: the max and
 * sum of exp over z in workgroup memory, then each thread sums its output column over the keys).
 *
 * The write copies x [B, Hkv, T, hd] into slots at … at + T − 1 of cache [B, Hkv, C, hd] in one program whose
 * output buffer is the cache's own (tfjs's `runWebGPUProgram` takes an output), so it is ordered with the other
 * programs and keeps x's buffer alive until the queue is submitted, as a tfjs op would.
 */
import * as tf from "@tensorflow/tfjs"
import type { WebGPUBackend, WebGPUProgram } from "@tensorflow/tfjs-backend-webgpu"
import * as Program from "./WebGpuProgram.js"
import { WG } from "./WebGpuProgram.js"

// Below any score (the masks hide with −1e9), and exp of it minus a score is 0.
const NEG = "-3.0e38"

const KERNEL = "R1DecodeAttention"
const WRITE_KERNEL = "R1CacheWrite"

const UNIFORMS = "nH : i32, nG : i32, hd : i32, nSp : i32, nS : i32, cap : i32, rows : i32, n : i32,"

// z [B, Hkv, G, Sp + S]: one thread per score.
const scores = (shape: Array<number>, n: number): WebGPUProgram => Program.perThread({
  variableNames: ["q", "promptK", "promptOf", "promptBias", "k", "mask"],
  outputShape: shape,
  shaderKey: "r1_decode_scores",
  uniforms: UNIFORMS,
  code: `
    fn main(index : i32) {
      if (index >= uniforms.n) { return; }
      let hd = uniforms.hd;
      let nSp = uniforms.nSp;
      let w = nSp + uniforms.nS;
      let row = index / w;
      let j = index - row * w;
      let b = row / (uniforms.nH * uniforms.nG);
      let h = (row / uniforms.nG) % uniforms.nH;
      let q0 = row * hd;
      var z = 0.0;
      if (j < nSp) {
        let k0 = ((promptOf[b] * uniforms.nH + h) * nSp + j) * hd;
        for (var d = 0; d < hd; d++) { z += q[q0 + d] * promptK[k0 + d]; }
        z += promptBias[b * nSp + j];
      } else {
        let s = j - nSp;
        let k0 = ((b * uniforms.nH + h) * uniforms.cap + s) * hd;
        for (var d = 0; d < hd; d++) { z += q[q0 + d] * k[k0 + d]; }
        z += mask[(b * uniforms.nG + row % uniforms.nG) * uniforms.nS + s];
      }
      result[index] = z;
    }`
}, n)

// o [B, Hkv, G, hd]: one workgroup per query row; per thread a running max and sum, merged in a tree.
const attend = (shape: Array<number>, rows: number): WebGPUProgram => Program.perRow({
  variableNames: ["z", "promptV", "promptOf", "v"],
  outputShape: shape,
  shaderKey: "r1_decode_out",
  uniforms: UNIFORMS,
  code: `
    var<workgroup> wp : array<f32, ${WG}>;
    var<workgroup> wl : array<f32, ${WG}>;
    fn main(index : i32) {
      ${Program.ROW}
      let lid = i32(localId.x);
      let rr = min(row, uniforms.rows - 1);
      let hd = uniforms.hd;
      let nSp = uniforms.nSp;
      let w = nSp + uniforms.nS;
      let z0 = rr * w;
      let b = rr / (uniforms.nH * uniforms.nG);
      let h = (rr / uniforms.nG) % uniforms.nH;
      let pv0 = (promptOf[b] * uniforms.nH + h) * nSp * hd;
      let v0 = ((b * uniforms.nH + h) * uniforms.cap - nSp) * hd; // v row of key j ≥ Sp: v0 + j·hd
      var mx = ${NEG};
      var l = 0.0;
      for (var j = lid; j < w; j += ${WG}) {
        let top = max(mx, z[z0 + j]);
        l = l * exp(mx - top) + exp(z[z0 + j] - top);
        mx = top;
      }
      wp[lid] = mx;
      wl[lid] = l;
      workgroupBarrier();
      for (var m = ${WG / 2}; m > 0; m >>= 1) {
        if (lid < m) {
          let top = max(wp[lid], wp[lid + m]);
          wl[lid] = wl[lid] * exp(wp[lid] - top) + wl[lid + m] * exp(wp[lid + m] - top);
          wp[lid] = top;
        }
        workgroupBarrier();
      }
      let lse = wp[0] + log(wl[0]);
      workgroupBarrier();
      for (var c0 = 0; c0 < hd; c0 += ${WG}) {
        let col = c0 + lid;
        var acc = 0.0;
        for (var j0 = 0; j0 < w; j0 += ${WG}) {
          let j = j0 + lid;
          wp[lid] = select(0.0, exp(z[z0 + min(j, w - 1)] - lse), j < w);
          workgroupBarrier();
          if (col < hd) {
            for (var u = 0; u < min(${WG}, w - j0); u++) {
              let jj = j0 + u;
              if (jj < nSp) { acc += wp[u] * promptV[pv0 + jj * hd + col]; } else { acc += wp[u] * v[v0 + jj * hd + col]; }
            }
          }
          workgroupBarrier();
        }
        if (col < hd && row < uniforms.rows) { result[rr * hd + col] = acc; }
      }
    }`
}, rows)

const decode: tf.KernelFunc = ({ inputs, backend }) => {
  const be = backend as unknown as WebGPUBackend
  const x = inputs as Record<"q" | "promptK" | "promptV" | "promptOf" | "promptBias" | "k" | "v" | "mask", tf.TensorInfo>
  const [B, H, G, hd] = x.q.shape
  const Sp = x.promptK.shape[2], S = x.mask.shape[3], rows = B * H * G, n = rows * (Sp + S)
  const u = [H, G, hd, Sp, S, x.k.shape[2], rows, n].map((v) => ({ type: "int32" as const, data: [v] }))
  // WebGPU binds no empty buffer (no prompt keys, Sp = 0): one unread element stands in.
  const stub = be.makeTensorInfo([1], "float32", new Float32Array(1))
  const bound = (t: tf.TensorInfo) => (tf.util.sizeFromShape(t.shape) > 0 ? t : stub)
  const z = be.runWebGPUProgram(scores([B, H, G, Sp + S], n), [x.q, x.promptK, x.promptOf, x.promptBias, x.k, x.mask].map(bound), "float32", u)
  const o = be.runWebGPUProgram(attend([B, H, G, hd], rows), [z, x.promptV, x.promptOf, x.v].map(bound), "float32", u)
  be.disposeData(z.dataId)
  be.disposeData(stub.dataId)
  return o
}

// cache[b, h, at + t] = x[b, h, t]: one thread per element of x, the cache bound as the output.
const copyRows = (cacheShape: Array<number>, n: number): WebGPUProgram => Program.perThread({
  variableNames: ["x"],
  outputShape: cacheShape,
  shaderKey: "r1_cache_write",
  uniforms: "n : i32, row : i32, cap : i32, at : i32, hd : i32,",
  code: `
    fn main(index : i32) {
      if (index < uniforms.n) {
        let pair = index / uniforms.row;
        result[(pair * uniforms.cap + uniforms.at) * uniforms.hd + index - pair * uniforms.row] = x[index];
      }
    }`
}, n)

const write: tf.KernelFunc = ({ inputs, backend, attrs }) => {
  const be = backend as unknown as WebGPUBackend
  const { cache, x } = inputs as { cache: tf.TensorInfo; x: tf.TensorInfo }
  const { at } = attrs as unknown as { at: number }
  const [, , cap, hd] = cache.shape
  const n = tf.util.sizeFromShape(x.shape)
  if (n > 0) {
    const u = [n, x.shape[2] * hd, cap, at, hd].map((v) => ({ type: "int32" as const, data: [v] }))
    be.runWebGPUProgram(copyRows([...cache.shape], n), [x], "float32", u, cache)
    // A read caches the values on the host and later reads return them: they are stale now.
    ;(be.tensorMap.get(cache.dataId) as { values: unknown }).values = null
  }
  // The cache's buffer again, shared as `Identity` shares it.
  be.incRef(cache.dataId)
  return { dataId: cache.dataId, shape: cache.shape, dtype: cache.dtype }
}

/** The decode kernels for `webgpu`, by the names `Decode.attend` and `Decode.write` look up. */
export const kernels: ReadonlyArray<readonly [string, tf.KernelFunc]> = [[KERNEL, decode], [WRITE_KERNEL, write]]
