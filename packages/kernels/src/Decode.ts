/**
 * Attention of the new tokens of each sequence during generation, as one kernel (`R1DecodeAttention`):
 *
 *   O[b, h, g] = Σ_s softmax_s(Q[b, h, g] · K_s + M_s) V_s,   s over [prompt keys of p(b)] ++ [own keys of b]
 *
 * Q [B, Hkv, Q, hd] (Q query rows per kv head: G query heads × the new tokens, the attention scale folded in), the prompts' keys/values
 * [P, Hkv, Sp, hd] held once per prompt, `promptOf` [B] int32 the prompt each row continues, its additive
 * bias [B, 1, 1, Sp] (padding), the rows' own keys/values [B, Hkv, C ≥ S, hd] of which the first S are attended
 * (S from the mask; C > S for a preallocated cache, see `write`) and their additive mask [B, 1, Q, S] (causal
 * and padding). Where the kernel is not registered the composite below runs (it gathers each row's prompt
 * keys: simple, but a copy per row). Not differentiable: generation runs outside gradients.
 */
import * as tf from "@tensorflow/tfjs"
import * as Memory from "./Memory.js"
import type { Addon } from "./Native.js"
import * as Registry from "./Registry.js"

/** The kernel's name in tfjs's registry. */
export const KERNEL = "R1DecodeAttention"

/** Whether the native kernel serves the current backend. */
export const available = (): boolean => Registry.has(KERNEL)

/** The inputs, by name. */
export interface Inputs {
  readonly q: tf.Tensor4D
  readonly promptK: tf.Tensor4D
  readonly promptV: tf.Tensor4D
  readonly promptOf: tf.Tensor1D
  readonly promptBias: tf.Tensor4D
  readonly k: tf.Tensor4D
  readonly v: tf.Tensor4D
  readonly mask: tf.Tensor4D
}

/** The same attention from tfjs ops. */
export const composite = (x: Inputs): tf.Tensor4D =>
  tf.tidy(() => {
    const b = x.q.shape[0]
    const sp = x.promptK.shape[2], s = x.mask.shape[3]
    const own = (t: tf.Tensor4D) => (t.shape[2] === s ? t : tf.slice(t, [0, 0, 0, 0], [-1, -1, s, -1]))
    const kAll = tf.concat([tf.gather(x.promptK, x.promptOf), own(x.k)], 2) // [B, Hkv, Sp + S, hd]
    const vAll = tf.concat([tf.gather(x.promptV, x.promptOf), own(x.v)], 2)
    const bias = tf.concat([tf.add(x.promptBias, tf.zeros([b, 1, x.q.shape[2], sp])), x.mask], 3) // [B, 1, G, Sp + S]
    return tf.matMul(tf.softmax(tf.add(tf.matMul(x.q, kAll, false, true), bias)), vAll) as tf.Tensor4D
  })

const fits = (x: Inputs): boolean => {
  const [b, h, g, d] = x.q.shape
  const [p, hp, sp, dp] = x.promptK.shape
  const cap = x.k.shape[2], s = x.mask.shape[3]
  const same = (t: tf.Tensor, shape: Array<number>) => t.dtype === "float32" && tf.util.arraysEqual(t.shape, shape)
  return same(x.q, [b, h, g, d]) && same(x.promptV, [p, hp, sp, dp]) && hp === h && dp === d &&
    x.promptOf.dtype === "int32" && tf.util.arraysEqual(x.promptOf.shape, [b]) && same(x.promptBias, [b, 1, 1, sp]) &&
    same(x.k, [b, h, cap, d]) && same(x.v, [b, h, cap, d]) && same(x.mask, [b, 1, g, s]) && s <= cap && p > 0
}

/** The attention output [B, Hkv, G, hd]. */
export const attend = (x: Inputs): tf.Tensor4D =>
  available() && fits(x) ? tf.engine().runKernel(KERNEL, { ...x }) as tf.Tensor4D : composite(x)

type Native = Addon & { decode(heap: Uint8Array | null, offsets: Float64Array, dims: Int32Array): void }

const offsets = new Float64Array(9)
const dims = new Int32Array(8)

/** The native kernel. */
export const kernel = (addon: Addon): tf.KernelFunc => (args) => {
  const mem = Memory.of(args.backend, addon)
  const x = args.inputs as unknown as Record<keyof Inputs, tf.TensorInfo>
  const [b, h, g, d] = x.q.shape
  const out = mem.output([b, h, g, d], "float32")
  if (b * h * g * d === 0) return out
  offsets.set([x.q, x.promptK, x.promptV, x.promptOf, x.promptBias, x.k, x.v, x.mask, out].map(mem.offset))
  dims.set([b, h, g, d, x.promptK.shape[0], x.promptK.shape[2], x.mask.shape[3], x.k.shape[2]])
  ;(addon as Native).decode(mem.heap(), offsets, dims)
  return out
}

/** The kernel that writes into a preallocated cache. */
export const WRITE_KERNEL = "R1CacheWrite"

/**
 * Writes x [B, Hkv, T, hd] into slots `at` … `at + T − 1` of `cache` [B, Hkv, C, hd] **in place**, so a
 * generation's keys/values grow without copying the whole cache every token (tfjs tensors are otherwise never
 * written after they are made: only pass a cache that nothing else reads, such as the one `Generate` owns).
 * Needs a write kernel for the backend (`available()`: the native ones on wasm and cpu, the WGSL one on webgpu); throws where none is registered.
 */
export const write = (cache: tf.Tensor4D, x: tf.Tensor4D, at: number): void => {
  const [b, h, cap, d] = cache.shape
  const t = x.shape[2]
  if (!Registry.has(WRITE_KERNEL)) throw new Error(`Decode.write needs the R1CacheWrite kernel, which the wasm and cpu (native) and webgpu (WGSL) backends register (backend: ${tf.getBackend()})`)
  if (cache.dtype !== "float32" || x.dtype !== "float32" || x.shape[0] !== b || x.shape[1] !== h || x.shape[3] !== d || !(at >= 0 && at + t <= cap)) {
    throw new RangeError(`Decode.write: [${x.shape}] at slot ${at} does not fit a cache of [${cache.shape}]`)
  }
  tf.dispose(tf.engine().runKernel(WRITE_KERNEL, { cache, x }, { at }) as tf.Tensor)
}

/**
 * The write kernel: row copies in JavaScript (inside the wasm heap, or between the cpu backend's arrays);
 * returns the cache's buffer again (shared, like `Identity`).
 */
export const writeKernel = (addon: Addon): tf.KernelFunc => (args) => {
  const mem = Memory.of(args.backend, addon)
  const { cache, x } = args.inputs as { cache: tf.TensorInfo; x: tf.TensorInfo }
  const { at } = args.attrs as unknown as { at: number }
  const [b, h, cap, d] = cache.shape
  const t = x.shape[2]
  const rowBytes = 4 * t * d
  const heap = mem.heap()
  if (heap !== null) {
    const c0 = mem.offset(cache), x0 = mem.offset(x)
    for (let i = 0; i < b * h; i++) heap.copyWithin(c0 + 4 * (i * cap + at) * d, x0 + i * rowBytes, x0 + (i + 1) * rowBytes)
  } else {
    const into = mem.view(cache), from = mem.view(x), row = t * d
    for (let i = 0; i < b * h; i++) into.set(from.subarray(i * row, (i + 1) * row), (i * cap + at) * d)
  }
  ;(args.backend as unknown as { incRef(dataId: unknown): void }).incRef(cache.dataId)
  return { dataId: cache.dataId, shape: cache.shape, dtype: cache.dtype }
}
