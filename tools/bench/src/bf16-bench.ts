/**
 * Should frozen weights (a LoRA base, GRPO's reference) be held in bf16 and widened per use? It halves
 * their bytes (4 → 2 a parameter); the price is a widening pass each time a matrix is used. This bench
 * measures that price against the matmul the weight is widened for, at the 1.5B shape's largest Linear
 * (gate/up, [1536, 8960]) and its attention projection ([1536, 1536]), for the row counts the run
 * multiplies by: 1 and 32 (decode, one token per sequence), 512 and 2048 (training rows).
 *
 *   widen   bf16 bits → float32: u32 = u16 << 16 over a Uint32Array view (a JavaScript loop: the lower
 *           bound of what per-use widening costs in this process without a native kernel)
 *   matmul  tf.matMul(x [N, in], W [in, out]) on the running backend (our native GEMM on cpu / wasm)
 *
 *   node tools/bench/dist/bf16-bench.js [--backend cpu|wasm] [--reps 5]
 *
 * Prints the median wall milliseconds of each and the ratio widen / matmul: near 0 means bf16 storage is
 * nearly free for that use, near or above 1 means it doubles the cost.
 */
import { Backend } from "@r1flow/backend"
import * as tf from "@tensorflow/tfjs"
import { median, time } from "./Timing.js"

const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(name)
  return i > 0 ? process.argv[i + 1] : fallback
}

/** float32 → bf16 bits, round to nearest even (as Safetensors.narrow writes them). */
const toBf16 = (x: Float32Array): Uint16Array => {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length), out = new Uint16Array(x.length)
  for (let i = 0; i < u.length; i++) out[i] = (u[i] + 0x7fff + ((u[i] >>> 16) & 1)) >>> 16
  return out
}

/** bf16 bits → float32 values, into `out`. */
const widen = (h: Uint16Array, out: Float32Array): void => {
  const u = new Uint32Array(out.buffer, out.byteOffset, out.length)
  for (let i = 0; i < h.length; i++) u[i] = h[i] << 16
}

const main = async () => {
  const backend = arg("--backend", "cpu"), reps = Number(arg("--reps", "5"))
  const info = await Backend.init({ force: backend as Backend.Name })
  console.log(`backend ${info.name}: ${info.reason.slice(0, 160)}`)
  console.log("| weight [in, out] | rows N | widen ms | matmul ms | widen / matmul |")
  console.log("|---|---:|---:|---:|---:|")
  for (const [inDim, outDim] of [[1536, 8960], [1536, 1536]] as const) {
    const w = tf.randomNormal([inDim, outDim], 0, 0.02, "float32", 1)
    const bits = toBf16(w.dataSync() as Float32Array), wide = new Float32Array(bits.length)
    const widenMs = median(Array.from({ length: reps }, () => time(() => widen(bits, wide)).wall * 1000))
    for (const n of [1, 32, 512, 2048]) {
      const x = tf.randomNormal([n, inDim], 0, 1, "float32", 2)
      tf.matMul(x, w as tf.Tensor2D).dispose() // warm
      const mm = median(Array.from({ length: reps }, () => time(() => tf.matMul(x, w as tf.Tensor2D).dataSync()).wall * 1000))
      console.log(`| [${inDim}, ${outDim}] | ${n} | ${widenMs.toFixed(1)} | ${mm.toFixed(1)} | ${(widenMs / mm).toFixed(2)} |`)
      x.dispose()
    }
    w.dispose()
  }
}

await main()
