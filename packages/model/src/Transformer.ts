/**
 * A decoder-only transformer in the Llama / Qwen2 / Qwen3 style, on TensorFlow.js.
 *
 *   x₀ = E[ids]                                        token embedding, E: [V, C]
 *   h  = x + Wo · Attn(RoPE(Wq·n₁(x)), RoPE(Wk·n₁(x)), Wv·n₁(x))     causal, grouped-query
 *   x' = h + Wdown · (silu(Wgate·n₂(h)) ⊙ Wup·n₂(h))    SwiGLU MLP
 *   logits = W_lm · n(x_L)                             W_lm = E when the head is tied
 *   n(x) = x / sqrt(mean(x²) + ε) ⊙ g                  RMSNorm
 *
 * Weights carry Hugging Face names (`model.layers.N.self_attn.q_proj.weight`, …) so a checkpoint maps
 * one to one; Linear weights are held transposed, `[in, out]` (HF stores `[out, in]`), so `x · W` needs no
 * transpose and XNNPACK keeps the packed weights between calls (its cache is keyed by the weight tensor).
 * `fromArrays` / `toArrays` / `weightShapes` speak HF layout; only the variables are transposed. RoPE is the HF "rotate half" form with
 * `inv_freq[i] = θ^(-2i/d)` (Llama 3's `rope_scaling` rescales it, `llama3InvFreq`); query heads `h` share
 * key/value head `⌊h / (H / Hkv)⌋` as in HF `repeat_kv`. Qwen3's variant: an explicit head width `hd` (q/o
 * `[C, H·hd]`, which need not be `C`) and an RMSNorm of each q and k head before RoPE (`q_norm`, `k_norm`); a
 * config without those options runs exactly the ops it ran before they existed.
 *
 * Written for the wasm backend's fast path: every product is a `tf.matMul` (2-D where possible), and the
 * steps that would otherwise be many small kernels are ops of `@r1flow/kernels` — `Fused.rmsNorm`,
 * `Fused.rope`, `Fused.swiglu`, `Attention.causal`, `Decode.attend` — each one kernel (forward and backward)
 * where a kernel is registered for the backend in tfjs's registry (native on wasm and cpu, WGSL on webgpu), and exactly the tfjs composite elsewhere (so a
 * backend without them runs its own). No `split`/`unstack` (they copy the whole input per output);
 * rotate-half, in the composite, is a product with a fixed ±1 matrix; the embedding is a `gather` whose
 * gradient is a segment sum where the backend has one, else a one-hot product (stock wasm has none).
 * Deviation from HF: none in the maths; attention masks use −1e9 rather than −∞ so padded query rows
 * stay finite.
 */
import * as tf from "@tensorflow/tfjs"
import type { Rng } from "@r1flow/core"
import { Attention, Decode, Fused, Registry } from "@r1flow/kernels"
import { Schema } from "effect"

/**
 * Llama 3's rotary frequency scaling (`rope_scaling.rope_type: "llama3"`): wavelengths longer than
 * `originalMaxPositionEmbeddings / lowFreqFactor` are divided by `factor`, shorter than
 * `… / highFreqFactor` kept, and the band between interpolated smoothly (transformers'
 * `_compute_llama3_parameters`; its attention factor is 1).
 */
export const Llama3Scaling = Schema.Struct({
  ropeType: Schema.Literal("llama3"),
  factor: Schema.Number,
  lowFreqFactor: Schema.Number,
  highFreqFactor: Schema.Number,
  originalMaxPositionEmbeddings: Schema.Number
})
/** Llama 3's rotary frequency scaling. */
export type Llama3Scaling = typeof Llama3Scaling.Type

/** Linear position interpolation (transformers' `linear`): every frequency divided by `factor`. */
export const LinearScaling = Schema.Struct({ ropeType: Schema.Literal("linear"), factor: Schema.Number })
/** Linear position interpolation. */
export type LinearScaling = typeof LinearScaling.Type

/** A rotary frequency scaling: Llama 3's or linear. */
export const RopeScaling = Schema.Union([Llama3Scaling, LinearScaling])
/** A rotary frequency scaling. */
export type RopeScaling = typeof RopeScaling.Type

/** Model shape. `vocabSize` comes from the tokenizer; head width is `headDim`, else `dModel / nHeads`. */
export const Config = Schema.Struct({
  vocabSize: Schema.Int,
  dModel: Schema.Int,
  nLayers: Schema.Int,
  nHeads: Schema.Int,
  nKvHeads: Schema.Int,
  dFf: Schema.Int,
  maxSeqLen: Schema.Int,
  ropeTheta: Schema.Number,
  normEps: Schema.Number,
  tieEmbeddings: Schema.Boolean,
  /** Biases on the q/k/v projections (Qwen2). Absent means false. */
  attentionBias: Schema.optionalKey(Schema.Boolean),
  /** Head width when it is not `dModel / nHeads` (Qwen3's `head_dim`): q/o are then `[C, H·hd]`. */
  headDim: Schema.optionalKey(Schema.Int),
  /** RMSNorm of each query and key head before RoPE (Qwen3's `q_norm` / `k_norm`). Absent means false. */
  qkNorm: Schema.optionalKey(Schema.Boolean),
  /** Rotary frequency scaling (Llama 3). Absent means plain `θ^(-2i/hd)`. */
  ropeScaling: Schema.optionalKey(RopeScaling)
})
/** Model shape. */
export type Config = typeof Config.Type

/** A named trainable tensor, HF name (Linear weights held `[in, out]`, the transpose of HF's `[out, in]`). */
export interface Weight {
  readonly name: string
  readonly variable: tf.Variable
}

/** The Linear layers of a block that LoRA can adapt (HF `q_proj` … `down_proj`). */
export type Target = "q" | "k" | "v" | "o" | "gate" | "up" | "down"

/**
 * A low-rank adapter on one Linear layer (LoRA): `x · W + scale · (x · A) · B`, A `[in, r]`, B `[r, out]`
 * (held like the layer's weight, the transpose of PEFT's `lora_A` `[r, in]` / `lora_B` `[out, r]`).
 */
export interface Adapter {
  readonly a: tf.Variable
  readonly b: tf.Variable
  /** α / r. */
  readonly scale: number
}

/** The weights of one block, in HF names. */
export interface Layer {
  readonly inputNorm: tf.Variable
  readonly q: tf.Variable
  readonly k: tf.Variable
  readonly v: tf.Variable
  readonly qBias?: tf.Variable
  readonly kBias?: tf.Variable
  readonly vBias?: tf.Variable
  readonly o: tf.Variable
  /** `[hd]` per-head RMSNorm gains of queries and keys (Qwen3). */
  readonly qNorm?: tf.Variable
  readonly kNorm?: tf.Variable
  readonly postNorm: tf.Variable
  readonly gate: tf.Variable
  readonly up: tf.Variable
  readonly down: tf.Variable
  /** LoRA adapters by target (see `Lora`); none means the block runs its base weights only. */
  readonly adapters?: Partial<Record<Target, Adapter>>
}

/** Constants derived from the config: RoPE tables and the rotate-half matrix. */
interface Constants {
  /** `[maxSeqLen, headDim]` cos / sin of the rotary angles. */
  readonly cos: tf.Tensor2D
  readonly sin: tf.Tensor2D
  /** Same, times `1/sqrt(headDim)`: the attention scale folded into the query rotation. */
  readonly cosQ: tf.Tensor2D
  readonly sinQ: tf.Tensor2D
  /** `[headDim, headDim]`: `x · R = rotate_half(x) = [−x₂, x₁]`. */
  readonly rotate: tf.Tensor2D
}

/** A policy: config, named weights, and the tensors it owns. */
export interface Model {
  readonly config: Config
  /** Every weight, HF name, in a fixed order (embedding, layers, final norm, untied head). */
  readonly weights: ReadonlyArray<Weight>
  readonly embed: tf.Variable
  readonly layers: ReadonlyArray<Layer>
  readonly norm: tf.Variable
  /** The untied output head `[C, V]`; undefined when tied to the embedding `[V, C]`. */
  readonly lmHead: tf.Variable | undefined
  /** @internal */
  readonly constants: Constants
  /** Present when LoRA adapters are attached (`Lora.attach`): then only they are trained, the base is frozen. */
  readonly lora?: LoraState
  /** Frees every weight and constant. */
  dispose(): void
}

/** The LoRA side of a model with adapters: its settings and the adapter weights, in PEFT names. */
export interface LoraState {
  readonly rank: number
  readonly alpha: number
  readonly targets: ReadonlyArray<Target>
  /** `…lora_A.weight` `[in, r]` and `…lora_B.weight` `[r, out]` per adapted Linear, block by block. */
  readonly weights: ReadonlyArray<Weight>
}

/** What an optimizer trains: the adapters under LoRA, otherwise every weight. */
export const trainableWeights = (model: Model): ReadonlyArray<Weight> => model.lora?.weights ?? model.weights

/** Head width. */
export const headDim = (c: Config) => c.headDim ?? c.dModel / c.nHeads

/** Problems with a config (empty when usable). */
export const problems = (c: Config): Array<string> => {
  const out: Array<string> = []
  for (const k of ["vocabSize", "dModel", "nLayers", "nHeads", "nKvHeads", "dFf", "maxSeqLen"] as const) {
    if (!Number.isInteger(c[k]) || c[k] <= 0) out.push(`${k} must be a positive integer, got ${c[k]}`)
  }
  if (c.headDim !== undefined) {
    if (!Number.isInteger(c.headDim) || c.headDim <= 0) out.push(`headDim must be a positive integer, got ${c.headDim}`)
    else if (c.headDim % 2 !== 0) out.push(`head width ${c.headDim} must be even for rotary embeddings`)
  } else if (c.dModel % c.nHeads !== 0) out.push(`dModel ${c.dModel} is not a multiple of nHeads ${c.nHeads}`)
  else if (headDim(c) % 2 !== 0) out.push(`head width ${headDim(c)} must be even for rotary embeddings`)
  if (c.nHeads % c.nKvHeads !== 0) out.push(`nHeads ${c.nHeads} is not a multiple of nKvHeads ${c.nKvHeads}`)
  if (!(c.ropeTheta > 0)) out.push(`ropeTheta must be positive, got ${c.ropeTheta}`)
  if (!(c.normEps > 0)) out.push(`normEps must be positive, got ${c.normEps}`)
  const s = c.ropeScaling
  if (s?.ropeType === "linear" && !(s.factor > 0)) out.push(`ropeScaling (linear) needs factor > 0, got ${JSON.stringify(s)}`)
  if (s?.ropeType === "llama3" && !(s.factor > 0 && s.lowFreqFactor > 0 && s.highFreqFactor > s.lowFreqFactor && s.originalMaxPositionEmbeddings > 0)) {
    out.push(`ropeScaling needs factor > 0, highFreqFactor > lowFreqFactor > 0 and originalMaxPositionEmbeddings > 0, got ${JSON.stringify(s)}`)
  }
  return out
}

/** Names and HF shapes (Linear `[out, in]`) of every weight of a config, in `Model.weights` order. */
export const weightShapes = (c: Config): Array<{ name: string; shape: Array<number> }> => {
  const hd = headDim(c), kv = c.nKvHeads * hd, qd = c.nHeads * hd
  const out: Array<{ name: string; shape: Array<number> }> = [{ name: "model.embed_tokens.weight", shape: [c.vocabSize, c.dModel] }]
  for (let l = 0; l < c.nLayers; l++) {
    const p = `model.layers.${l}.`
    out.push(
      { name: `${p}input_layernorm.weight`, shape: [c.dModel] },
      { name: `${p}self_attn.q_proj.weight`, shape: [qd, c.dModel] },
      { name: `${p}self_attn.k_proj.weight`, shape: [kv, c.dModel] },
      { name: `${p}self_attn.v_proj.weight`, shape: [kv, c.dModel] }
    )
    if (c.attentionBias === true) {
      out.push(
        { name: `${p}self_attn.q_proj.bias`, shape: [qd] },
        { name: `${p}self_attn.k_proj.bias`, shape: [kv] },
        { name: `${p}self_attn.v_proj.bias`, shape: [kv] }
      )
    }
    out.push({ name: `${p}self_attn.o_proj.weight`, shape: [c.dModel, qd] })
    if (c.qkNorm === true) out.push({ name: `${p}self_attn.q_norm.weight`, shape: [hd] }, { name: `${p}self_attn.k_norm.weight`, shape: [hd] })
    out.push(
      { name: `${p}post_attention_layernorm.weight`, shape: [c.dModel] },
      { name: `${p}mlp.gate_proj.weight`, shape: [c.dFf, c.dModel] },
      { name: `${p}mlp.up_proj.weight`, shape: [c.dFf, c.dModel] },
      { name: `${p}mlp.down_proj.weight`, shape: [c.dModel, c.dFf] }
    )
  }
  out.push({ name: "model.norm.weight", shape: [c.dModel] })
  if (!c.tieEmbeddings) out.push({ name: "lm_head.weight", shape: [c.vocabSize, c.dModel] })
  return out
}

/** Linear weights are the ones held transposed. */
export const isLinear = (name: string): boolean => name.endsWith("_proj.weight") || name === "lm_head.weight"

/** Row-major `[rows, cols]` → `[cols, rows]` (HF `[out, in]` ↔ ours `[in, out]`). */
export const transpose2d = (a: Float32Array, rows: number, cols: number): Float32Array => {
  const out = new Float32Array(a.length)
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = a[i * cols + j]
  return out
}

/**
 * `inv_freq` under Llama 3 scaling, as transformers' `_compute_llama3_parameters`: with wavelength
 * λ = 2π / f and L = originalMaxPositionEmbeddings, f / factor where λ > L / low, f where λ < L / high,
 * else (1 − s)·f / factor + s·f with s = (L / λ − low) / (high − low).
 */
export const llama3InvFreq = (c: Config, s: Llama3Scaling): Float64Array => {
  const hd = headDim(c), half = hd / 2
  const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor, highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor
  const out = new Float64Array(half)
  for (let i = 0; i < half; i++) {
    const f = Math.pow(c.ropeTheta, (-2 * i) / hd), wavelen = (2 * Math.PI) / f
    if (wavelen > lowWavelen) out[i] = f / s.factor
    else if (wavelen < highWavelen) out[i] = f
    else {
      const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor)
      out[i] = (1 - smooth) * f / s.factor + smooth * f
    }
  }
  return out
}

/** `inv_freq` under `s`: Llama 3's bands, or linear interpolation (`θ^(-2i/d) / factor`, transformers' `linear`). */
export const scaledInvFreq = (c: Config, s: RopeScaling): Float64Array => {
  if (s.ropeType === "llama3") return llama3InvFreq(c, s)
  const hd = headDim(c)
  return Float64Array.from({ length: hd / 2 }, (_, i) => Math.pow(c.ropeTheta, (-2 * i) / hd) / s.factor)
}

const makeConstants = (c: Config): Constants => {
  const hd = headDim(c), half = hd / 2, T = c.maxSeqLen
  const cos = new Float32Array(T * hd), sin = new Float32Array(T * hd)
  const scaled = c.ropeScaling === undefined ? undefined : scaledInvFreq(c, c.ropeScaling)
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < half; i++) {
      const a = scaled === undefined ? t * Math.pow(c.ropeTheta, (-2 * i) / hd) : t * scaled[i]
      cos[t * hd + i] = cos[t * hd + i + half] = Math.cos(a)
      sin[t * hd + i] = sin[t * hd + i + half] = Math.sin(a)
    }
  }
  const rotate = new Float32Array(hd * hd)
  for (let j = 0; j < half; j++) {
    rotate[(j + half) * hd + j] = -1
    rotate[j * hd + j + half] = 1
  }
  const s = 1 / Math.sqrt(hd)
  return {
    cos: tf.tensor2d(cos, [T, hd]),
    sin: tf.tensor2d(sin, [T, hd]),
    cosQ: tf.tensor2d(cos.map((x) => x * s), [T, hd]),
    sinQ: tf.tensor2d(sin.map((x) => x * s), [T, hd]),
    rotate: tf.tensor2d(rotate, [hd, hd])
  }
}

/**
 * Builds a model from one Float32Array per weight (HF names and layout, shapes of `weightShapes`).
 * Variables are created non-trainable when `trainable` is false (a frozen reference policy).
 */
export const fromArrays = (config: Config, arrays: ReadonlyMap<string, Float32Array>, trainable = true): Model => {
  const bad = problems(config)
  if (bad.length > 0) throw new RangeError(`bad model config: ${bad.join("; ")}`)
  const weights: Array<Weight> = []
  const byName = new Map<string, tf.Variable>()
  try {
    for (const { name, shape } of weightShapes(config)) {
      const data = arrays.get(name)
      if (data === undefined) throw new RangeError(`weight ${name} is missing`)
      const size = shape.reduce((a, b) => a * b, 1)
      if (data.length !== size) throw new RangeError(`weight ${name} has ${data.length} values, shape [${shape}] needs ${size}`)
      // Variable names are global in tfjs, so they stay auto-generated; `name` is the HF name.
      const initial = isLinear(name) ? tf.tensor(transpose2d(data, shape[0], shape[1]), [shape[1], shape[0]], "float32") : tf.tensor(data, shape, "float32")
      const variable = tf.variable(initial, trainable)
      initial.dispose()
      weights.push({ name, variable })
      byName.set(name, variable)
    }
  } catch (e) {
    for (const w of weights) w.variable.dispose()
    throw e
  }
  const get = (name: string) => byName.get(name)!
  const layers: Array<Layer> = []
  for (let l = 0; l < config.nLayers; l++) {
    const p = `model.layers.${l}.`
    layers.push({
      inputNorm: get(`${p}input_layernorm.weight`),
      q: get(`${p}self_attn.q_proj.weight`),
      k: get(`${p}self_attn.k_proj.weight`),
      v: get(`${p}self_attn.v_proj.weight`),
      ...(config.attentionBias === true
        ? { qBias: get(`${p}self_attn.q_proj.bias`), kBias: get(`${p}self_attn.k_proj.bias`), vBias: get(`${p}self_attn.v_proj.bias`) }
        : {}),
      o: get(`${p}self_attn.o_proj.weight`),
      ...(config.qkNorm === true ? { qNorm: get(`${p}self_attn.q_norm.weight`), kNorm: get(`${p}self_attn.k_norm.weight`) } : {}),
      postNorm: get(`${p}post_attention_layernorm.weight`),
      gate: get(`${p}mlp.gate_proj.weight`),
      up: get(`${p}mlp.up_proj.weight`),
      down: get(`${p}mlp.down_proj.weight`)
    })
  }
  const constants = makeConstants(config)
  const embed = get("model.embed_tokens.weight")
  return {
    config,
    weights,
    embed,
    layers,
    norm: get("model.norm.weight"),
    lmHead: config.tieEmbeddings ? undefined : get("lm_head.weight"),
    constants,
    dispose: () => {
      for (const w of weights) w.variable.dispose()
      for (const t of Object.values(constants)) t.dispose()
    }
  }
}

/**
 * A new model with weights drawn from `rng`: Linear and embedding weights ~ N(0, 0.02²), the output
 * projections of each block (o_proj, down_proj) scaled by 1/sqrt(2·nLayers) as in GPT-2, norms 1, biases 0.
 * Same config and stream state → bitwise the same weights.
 */
export const init = (config: Config, rng: Rng.Stream): Model => {
  const arrays = new Map<string, Float32Array>()
  const residualScale = 1 / Math.sqrt(2 * config.nLayers)
  for (const { name, shape } of weightShapes(config)) {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1))
    if (name.endsWith("norm.weight")) data.fill(1)
    else if (!name.endsWith(".bias")) {
      const std = 0.02 * (name.endsWith("o_proj.weight") || name.endsWith("down_proj.weight") ? residualScale : 1)
      for (let i = 0; i < data.length; i++) data[i] = rng.normal() * std
    }
    arrays.set(name, data)
  }
  return fromArrays(config, arrays)
}

/** One weight's values in HF layout (a copy), read with `data()` (a GPU tensor has no synchronous read). */
export const toArray = async (w: Weight): Promise<Float32Array> => {
  const data = (await w.variable.data()) as Float32Array
  return isLinear(w.name) ? transpose2d(data, w.variable.shape[0] as number, w.variable.shape[1] as number) : data
}

/** Every weight's values, by HF name, in HF layout (a copy); one weight read at a time. */
export const toArrays = async (model: Model): Promise<Map<string, Float32Array>> => {
  const out = new Map<string, Float32Array>()
  for (const w of model.weights) out.set(w.name, await toArray(w))
  return out
}

/** A copy with its own variables; non-trainable unless asked (the frozen reference policy). */
export const clone = async (model: Model, options: { readonly trainable?: boolean } = {}): Promise<Model> =>
  fromArrays(model.config, await toArrays(model), options.trainable ?? false)

/** Overwrites `to`'s weights with `from`'s (same config), e.g. to refresh the reference policy. */
export const copyWeights = (from: Model, to: Model): void => {
  if (from.weights.length !== to.weights.length) throw new RangeError("copyWeights: the models have different weights")
  for (let i = 0; i < from.weights.length; i++) {
    const a = from.weights[i], b = to.weights[i]
    if (a.name !== b.name || !tf.util.arraysEqual(a.variable.shape, b.variable.shape)) {
      throw new RangeError(`copyWeights: ${a.name} [${a.variable.shape}] does not match ${b.name} [${b.variable.shape}]`)
    }
    b.variable.assign(a.variable)
  }
}

/** Number of parameters. */
export const parameterCount = (model: Model): number => model.weights.reduce((n, w) => n + w.variable.size, 0)

/** Number of parameters of a model of `config`, without building it. */
export const parametersOf = (config: Config): number =>
  weightShapes(config).reduce((n, w) => n + w.shape.reduce((a, b) => a * b, 1), 0)

// ---------------------------------------------------------------------------------------------------
// Building blocks. All take and return 2-D activations [N, C] (N = B·T) unless stated.

/** x · W (+ b), with W held [in, out]. */
const linear = (x: tf.Tensor2D, w: tf.Tensor, b?: tf.Variable): tf.Tensor2D => {
  const y = tf.matMul(x, w as tf.Tensor2D) as tf.Tensor2D
  return b === undefined ? y : (tf.add(y, b) as tf.Tensor2D)
}

/** A block's Linear `target` on x [N, in]: `linear`, plus its LoRA adapter's `scale · (x · A) · B` where it has one. */
const project = (layer: Layer, target: Target, x: tf.Tensor2D, b?: tf.Variable): tf.Tensor2D => {
  const y = linear(x, layer[target], b)
  const ad = layer.adapters?.[target]
  if (ad === undefined) return y
  const low = tf.matMul(tf.matMul(x, ad.a), ad.b) // [N, r] → [N, out]
  return tf.add(y, tf.mul(low, ad.scale)) as tf.Tensor2D
}

/**
 * `oneHot(ids, depth)` as float32. The wasm OneHot kernel ignores a float32 dtype and writes int32 bits
 * (all zeros read as floats), so the one-hot is made as int32 and cast.
 */
export const oneHotF32 = (ids: tf.Tensor, depth: number): tf.Tensor => tf.cast(tf.oneHot(ids as tf.Tensor1D, depth), "float32")

/**
 * Embedding lookup E[ids]. Its gradient is a segment sum of dy by id: a plain `tf.gather` where the backend
 * has `UnsortedSegmentSum` (the native kernels add one to wasm), else a gather whose gradient is the
 * product onehot(ids)ᵀ · dy (stock wasm has no segment sum).
 */
const embedLookup = (table: tf.Variable, ids: tf.Tensor1D): tf.Tensor2D => {
  if (Registry.has("UnsortedSegmentSum")) return tf.gather(table, ids) as tf.Tensor2D
  const f = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [e, i, save] = args as [tf.Tensor, tf.Tensor, tf.GradSaveFunc]
    // `save` keeps the ids alive for the backward pass even when the forward ran inside tf.tidy.
    save([i])
    return {
      value: tf.gather(e, i) as tf.Tensor2D,
      gradFunc: (dy: tf.Tensor | Array<tf.Tensor>, saved: Array<tf.Tensor>) => [
        tf.matMul(oneHotF32(saved[0], table.shape[0]) as tf.Tensor2D, dy as tf.Tensor2D, true, false),
        tf.zerosLike(saved[0])
      ]
    }
  })
  return f(table, ids) as tf.Tensor2D
}

/**
 * Keys and values of one layer for the positions seen so far: [B, Hkv, S, hd]. With `length`, a preallocated
 * cache (`preallocate`): [B, Hkv, C, hd] of which the first `length` slots are filled, and `step` writes the
 * new slots in place instead of concatenating (where `Decode.available()`: native kernels on wasm and cpu, WGSL on webgpu).
 */
export interface LayerCache {
  readonly k: tf.Tensor4D
  readonly v: tf.Tensor4D
  readonly length?: number
}

/**
 * An empty cache of `capacity` slots per row for `step` to fill in place, where the native decode kernels
 * serve the backend (`Decode.available()`); `undefined` elsewhere (`step` then grows its cache by concatenation).
 * The caller owns the tensors and must not hand them to anything else: they are written after they are made.
 */
export const preallocate = (model: Model, batch: number, capacity: number): Cache | undefined => {
  if (!Decode.available()) return undefined
  const c = model.config, shape: [number, number, number, number] = [batch, c.nKvHeads, capacity, headDim(c)]
  return model.layers.map(() => ({ k: tf.zeros(shape) as tf.Tensor4D, v: tf.zeros(shape) as tf.Tensor4D, length: 0 }))
}

/** Per-call position inputs: rotary tables already gathered for the query positions, and the additive mask. */
interface Positions {
  /** Broadcastable to [B, T, 1, hd]. */
  readonly cos: tf.Tensor
  readonly sin: tf.Tensor
  readonly cosQ: tf.Tensor
  readonly sinQ: tf.Tensor
  /** Additive mask broadcastable to [B, Hkv, G·T, S]: 0 where query may attend key, −1e9 elsewhere. */
  readonly mask: tf.Tensor
}

/**
 * Attention of queries [B, Hkv, G·T, hd] over keys/values [B, Hkv, S, hd], S = past + T, under an additive
 * causal mask: `Attention.causal`, a fused native kernel on the wasm backend that skips the keys after each
 * row's causal window (and saves no [G·T, S] probabilities), else the batched products it replaces.
 */
const attend = (q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, mask: tf.Tensor, time: number): tf.Tensor4D =>
  Attention.causal(q, k, v, mask, k.shape[2] - time)

/**
 * Keys/values of prompts that several batch rows continue (generation: R completions per prompt),
 * held once per prompt, and where each row's prompt is. For `attendPrompted`.
 */
interface PromptKeys {
  /** [P, Hkv, Sp, hd] */
  readonly k: tf.Tensor4D
  readonly v: tf.Tensor4D
  /** R: rows per prompt. */
  readonly perPrompt: number
  /** [P·R] int32: the batch row of prompt p's r-th completion, or B when that row is gone; none when every row is there in order. */
  readonly slots?: tf.Tensor1D
  /** [B] int32: each batch row's p·R + r; none when every row is there in order. */
  readonly rows?: tf.Tensor1D
  /** [B, 1, 1, Sp] additive: the prompt's padding slots. */
  readonly mask: tf.Tensor4D
  /** [B] int32: each row's prompt, when the fused decode kernel serves the backend (`Decode.available()`). */
  readonly promptOf?: tf.Tensor1D
}

/**
 * Attention of queries q [B, Hkv, Q, hd] over their prompt's keys (`PromptKeys`, shared by the rows of a
 * prompt) and then their own k, v [B, Hkv, S, hd] under `mask` [.., Q, S]. The prompt part runs prompt by
 * prompt: the rows' queries are gathered into [P, Hkv, R·Q, hd] (absent rows are zeros), one product per
 * prompt and kv head, and the result gathered back, so no row holds a copy of its prompt's keys.
 */
const attendPrompted = (q: tf.Tensor4D, p: PromptKeys, k: tf.Tensor4D, v: tf.Tensor4D, mask: tf.Tensor): tf.Tensor4D => {
  if (p.promptOf !== undefined) {
    return Decode.attend({ q, promptK: p.k, promptV: p.v, promptOf: p.promptOf, promptBias: p.mask, k, v, mask: mask as tf.Tensor4D })
  }
  const [b, h, nq, hd] = q.shape
  const [np, , sp] = p.k.shape
  const R = p.perPrompt
  const toPrompts = (x: tf.Tensor, w: number) => {
    const rows = p.slots === undefined ? x : tf.gather(tf.concat([x, tf.zeros([1, h, nq, w])], 0), p.slots) // [P·R, Hkv, Q, w]
    return tf.reshape(tf.transpose(tf.reshape(rows, [np, R, h, nq * w]), [0, 2, 1, 3]), [np, h, R * nq, w]) as tf.Tensor4D
  }
  const toRows = (x: tf.Tensor, w: number) => {
    const rows = tf.reshape(tf.transpose(tf.reshape(x, [np, h, R, nq * w]), [0, 2, 1, 3]), [np * R, h, nq, w])
    return (p.rows === undefined ? rows : tf.gather(rows, p.rows)) as tf.Tensor4D
  }
  const scoresP = tf.add(toRows(tf.matMul(toPrompts(q, hd), p.k, false, true), sp), p.mask) // [B, Hkv, Q, Sp]
  const s = k.shape[2]
  const scores = tf.add(tf.sum(tf.mul(tf.reshape(q, [b, h, nq, 1, hd]), tf.reshape(k, [b, h, 1, s, hd])), -1), mask) // [B, Hkv, Q, S]
  const probs = tf.softmax(tf.concat([scoresP, scores], 3))
  const pp = tf.slice(probs, [0, 0, 0, 0], [b, h, nq, sp]), ps = tf.slice(probs, [0, 0, 0, sp], [b, h, nq, s])
  const outP = toRows(tf.matMul(toPrompts(pp, sp), p.v), hd)
  const vt = tf.transpose(v, [0, 1, 3, 2]) // [B, Hkv, hd, S]
  return tf.add(outP, tf.sum(tf.mul(tf.reshape(ps, [b, h, nq, 1, s]), tf.reshape(vt, [b, h, 1, hd, s])), -1)) as tf.Tensor4D
}

/** Up to this many query rows per kv head, attention is done with broadcasts instead of products. */
const SMALL_QUERY = 4

/**
 * The same for a handful of query rows (decoding: one token): B·Hkv matrix-vector products are cheaper
 * as broadcast multiply + sum over the last axis than as batched matmuls (per-product setup dominates).
 */
const attendSmall = (q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, mask: tf.Tensor): tf.Tensor4D => {
  const [b, h, nq, hd] = q.shape
  const s = k.shape[2]
  const scores = tf.sum(tf.mul(tf.reshape(q, [b, h, nq, 1, hd]), tf.reshape(k, [b, h, 1, s, hd])), -1) // [B, Hkv, Q, S]
  const p = tf.softmax(tf.add(scores, mask))
  const vt = tf.transpose(v, [0, 1, 3, 2]) // [B, Hkv, hd, S]
  return tf.sum(tf.mul(tf.reshape(p, [b, h, nq, 1, s]), tf.reshape(vt, [b, h, 1, hd, s])), -1) as tf.Tensor4D
}

/**
 * One transformer block on x [B·T, C]; returns the new residual stream and this call's keys/values.
 * `prefix` is the keys/values [1, Hkv, P, hd] of a prefix shared by every row (`forwardShared`): the
 * queries see it before their own keys, and `pos.mask` spans both.
 */
const block = (
  model: Model,
  layer: Layer,
  x: tf.Tensor2D,
  batch: number,
  time: number,
  pos: Positions,
  past: LayerCache | undefined,
  prefix?: LayerCache,
  prompts?: PromptKeys
): { x: tf.Tensor2D; cache: LayerCache } => {
  const c = model.config, hd = headDim(c), H = c.nHeads, Hkv = c.nKvHeads, G = H / Hkv
  const n1 = Fused.rmsNorm(x, layer.inputNorm, c.normEps)
  // Qwen3 normalises each head before the rotation: RMSNorm over the last axis, hd wide.
  const perHead = (y: tf.Tensor4D, g: tf.Variable | undefined) => (g === undefined ? y : Fused.rmsNorm(y, g, c.normEps))
  const q = Fused.rope(perHead(tf.reshape(project(layer, "q", n1, layer.qBias), [batch, time, H, hd]), layer.qNorm), pos.cosQ, pos.sinQ, model.constants.rotate)
  const kNew = Fused.rope(perHead(tf.reshape(project(layer, "k", n1, layer.kBias), [batch, time, Hkv, hd]), layer.kNorm), pos.cos, pos.sin, model.constants.rotate)
  const vNew = tf.reshape(project(layer, "v", n1, layer.vBias), [batch, time, Hkv, hd])
  // [B, Hkv, T, hd]; with a cache, append along time → [B, Hkv, S, hd].
  let k = tf.transpose(kNew, [0, 2, 1, 3]) as tf.Tensor4D
  let v = tf.transpose(vNew, [0, 2, 1, 3]) as tf.Tensor4D
  let filled: number | undefined
  if (past?.length !== undefined) {
    // Preallocated: the new slots are written in place; the decode kernel attends over the filled ones.
    Decode.write(past.k, k, past.length)
    Decode.write(past.v, v, past.length)
    filled = past.length + time
    k = past.k
    v = past.v
    if (prompts === undefined) {
      k = tf.slice(k, [0, 0, 0, 0], [-1, -1, filled, -1])
      v = tf.slice(v, [0, 0, 0, 0], [-1, -1, filled, -1])
    }
  } else if (past !== undefined) {
    k = tf.concat([past.k, k], 2)
    v = tf.concat([past.v, v], 2)
  }
  // A shared prefix's [1, Hkv, P, hd] goes before every row's keys, broadcast by adding zeros: a small
  // copy whose gradient is a sum over rows (tf.tile's gradient slices once per row).
  const rows = prefix === undefined ? undefined : tf.zeros([batch, 1, 1, 1])
  const kAll = prefix === undefined ? k : tf.concat([tf.add(prefix.k, rows!), k], 2) as tf.Tensor4D
  const vAll = prefix === undefined ? v : tf.concat([tf.add(prefix.v, rows!), v], 2) as tf.Tensor4D
  // Query heads grouped by their kv head: [B, H, T, hd] → [B, Hkv, G·T, hd] (h = kv·G + g).
  const qg = tf.reshape(tf.transpose(q, [0, 2, 1, 3]), [batch, Hkv, G * time, hd]) as tf.Tensor4D
  const att = prompts !== undefined
    ? attendPrompted(qg, prompts, kAll, vAll, pos.mask)
    : G * time <= SMALL_QUERY
    ? attendSmall(qg, kAll, vAll, pos.mask)
    : attend(qg, kAll, vAll, pos.mask, time) // [B, Hkv, G·T, hd]
  const merged = tf.reshape(tf.transpose(tf.reshape(att, [batch, H, time, hd]), [0, 2, 1, 3]), [batch * time, H * hd])
  const h = tf.add(x, project(layer, "o", merged as tf.Tensor2D)) as tf.Tensor2D
  const n2 = Fused.rmsNorm(h, layer.postNorm, c.normEps)
  const gate = project(layer, "gate", n2)
  const mlp = project(layer, "down", Fused.swiglu(gate, project(layer, "up", n2)))
  return { x: tf.add(h, mlp), cache: filled === undefined ? { k, v } : { k: past!.k, v: past!.v, length: filled } }
}

/** Causal additive mask [1, 1, G·T, P+T] for T new tokens after P earlier ones every query sees. */
const causalMask = (time: number, groups: number, past = 0): tf.Tensor4D => {
  const S = past + time
  const m = new Float32Array(groups * time * S)
  for (let g = 0; g < groups; g++) {
    for (let i = 0; i < time; i++) m.fill(-1e9, (g * time + i) * S + past + i + 1, (g * time + i + 1) * S)
  }
  return tf.tensor4d(m, [1, 1, groups * time, S])
}

/** Options of `forward`, `hidden` and their shared-prefix forms. */
export interface ForwardOptions {
  /**
   * Activation checkpointing: each block keeps only its input for the backward and runs again there, so
   * the activations of one block at a time are alive rather than all of them. Same values and gradients.
   */
  readonly checkpoint?: boolean
}

/** The variables of a block that gradients can reach: its trainable weights and adapters. */
const trainableOf = (layer: Layer): Array<tf.Variable> => {
  const { adapters, ...weights } = layer
  const all = [...Object.values(weights), ...Object.values(adapters ?? {}).flatMap((a) => [a.a, a.b])]
  return all.filter((v): v is tf.Variable => v instanceof tf.Variable && v.trainable)
}

/**
 * `run(xs, pos)`, one block on its inputs, under activation checkpointing: the forward keeps no
 * intermediate tensor, and the backward runs it again under a tape for the gradients of `xs` and of the
 * layer's trainable variables. The same kernels run both times, so the gradients are those of `run`.
 * `pos` is kept with the inputs (the forward's own copies are gone by the time the backward runs).
 */
const checkpointed = (
  layer: Layer,
  run: (xs: Array<tf.Tensor>, pos: ReadonlyArray<Positions>) => tf.Tensor,
  xs: Array<tf.Tensor>,
  pos: ReadonlyArray<Positions>
): tf.Tensor => {
  const vars = trainableOf(layer)
  const keys = ["cos", "sin", "cosQ", "sinQ", "mask"] as const
  const unpack = (ts: Array<tf.Tensor>): Array<Positions> =>
    pos.map((_, i) => Object.fromEntries(keys.map((k, j) => [k, ts[i * keys.length + j]])) as unknown as Positions)
  const f = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const inputs = args.slice(0, xs.length) as Array<tf.Tensor>
    ;(args[args.length - 1] as tf.GradSaveFunc)([...inputs, ...pos.flatMap((p) => keys.map((k) => p[k]))])
    return {
      value: run(inputs, pos),
      gradFunc: (dy: tf.Tensor | Array<tf.Tensor>, saved: Array<tf.Tensor>) => {
        const again = saved.slice(0, xs.length), kept = unpack(saved.slice(xs.length))
        // A gradient taken inside a backward pass replaces the engine's tape, which the outer pass still reads.
        const state = (tf.engine() as unknown as { state: { activeTape: unknown } }).state
        const tape = state.activeTape
        const { value, grads } = tf.engine().gradients(() => run(again, kept), [...again, ...vars], dy as tf.Tensor)
        state.activeTape = tape
        value.dispose()
        return grads
      }
    }
  })
  return f(...xs, ...vars)
}

/** Rotary tables and causal mask of `n` positions from `from`, for T = n queries per row. */
const positionsAt = (model: Model, from: number, n: number): Positions => {
  const k = model.constants
  const slice = (t: tf.Tensor2D) => tf.reshape(tf.slice(t, [from, 0], [n, -1]), [1, n, 1, -1])
  return { cos: slice(k.cos), sin: slice(k.sin), cosQ: slice(k.cosQ), sinQ: slice(k.sinQ), mask: causalMask(n, model.config.nHeads / model.config.nKvHeads, from) }
}

/**
 * The final-normed hidden states `[B·T, C]` of every position of `ids` `[B, T]` (int32), positions 0…T−1,
 * causal: `forward` without its output head (a chunked head takes it from here).
 * Differentiable; call inside `tf.tidy` / `tf.variableGrads`.
 */
export const hidden = (model: Model, ids: tf.Tensor2D, options: ForwardOptions = {}): tf.Tensor2D => {
  const c = model.config
  const [batch, time] = ids.shape
  if (time > c.maxSeqLen) throw new RangeError(`sequence of ${time} tokens is longer than maxSeqLen ${c.maxSeqLen}`)
  const pos = positionsAt(model, 0, time)
  let x = embedLookup(model.embed, tf.reshape(ids, [-1]) as tf.Tensor1D)
  for (const layer of model.layers) {
    const run = ([a]: Array<tf.Tensor>, [p]: ReadonlyArray<Positions>) => block(model, layer, a as tf.Tensor2D, batch, time, p, undefined).x
    x = (options.checkpoint === true ? checkpointed(layer, run, [x], [pos]) : run([x], [pos])) as tf.Tensor2D
  }
  return Fused.rmsNorm(x, model.norm, c.normEps)
}

/**
 * Logits `[B, T, V]` of every position of `ids` `[B, T]` (int32), positions 0…T−1, causal.
 * Differentiable; call inside `tf.tidy` / `tf.variableGrads`.
 */
export const forward = (model: Model, ids: tf.Tensor2D, options: ForwardOptions = {}): tf.Tensor3D =>
  logitsOf(model, hidden(model, ids, options), ids.shape[0], ids.shape[1])

/** Output head: final-normed x [B·T, C] → logits [B, T, V]. */
const logitsOf = (model: Model, n: tf.Tensor2D, batch: number, time: number): tf.Tensor3D => {
  const logits = model.lmHead === undefined ? tf.matMul(n, model.embed, false, true) : linear(n, model.lmHead)
  return tf.reshape(logits, [batch, time, model.config.vocabSize])
}

/**
 * `hidden` of B sequences that all begin with the same P tokens, computing that prefix once: `prefix`
 * `[1, P]` runs as a batch of one, and `suffix` `[B, S]` (positions P…P+S−1 of each row) attends over the
 * prefix's keys/values, which every row shares, then its own. Returns the prefix's final-normed hidden
 * states `[P, C]` (the same for every row) and the suffix's `[B·S, C]`; together they equal `hidden` of the
 * rows `prefix ++ suffix[b]` up to float rounding, and so do the gradients (the prefix's are summed over rows).
 * Differentiable; call inside `tf.tidy` / `tf.variableGrads`. Needs P ≥ 1 and S ≥ 1.
 */
export const hiddenShared = (model: Model, prefix: tf.Tensor2D, suffix: tf.Tensor2D, options: ForwardOptions = {}): { prefix: tf.Tensor2D; suffix: tf.Tensor2D } => {
  const c = model.config
  const [one, P] = prefix.shape
  const [batch, S] = suffix.shape
  if (one !== 1) throw new RangeError(`forwardShared: the prefix must be one row, got ${one}`)
  if (P < 1 || S < 1) throw new RangeError(`forwardShared: prefix (${P}) and suffix (${S}) need at least one token each`)
  if (P + S > c.maxSeqLen) throw new RangeError(`sequence of ${P + S} tokens is longer than maxSeqLen ${c.maxSeqLen}`)
  const posP = positionsAt(model, 0, P), posS = positionsAt(model, P, S)
  let xp = embedLookup(model.embed, tf.reshape(prefix, [-1]) as tf.Tensor1D) // [P, C]
  let xs = embedLookup(model.embed, tf.reshape(suffix, [-1]) as tf.Tensor1D) // [B·S, C]
  for (const layer of model.layers) {
    if (options.checkpoint === true) {
      // One checkpointed unit per layer: the suffix needs the prefix's keys, so both rows run (and rerun) together.
      const run = ([a, b]: Array<tf.Tensor>, [pp, ps]: ReadonlyArray<Positions>) => {
        const p = block(model, layer, a as tf.Tensor2D, 1, P, pp, undefined)
        return tf.concat([p.x, block(model, layer, b as tf.Tensor2D, batch, S, ps, undefined, p.cache).x], 0) // [P + B·S, C]
      }
      const both = checkpointed(layer, run, [xp, xs], [posP, posS])
      xp = tf.slice(both, [0, 0], [P, -1]) as tf.Tensor2D
      xs = tf.slice(both, [P, 0], [-1, -1]) as tf.Tensor2D
    } else {
      const p = block(model, layer, xp, 1, P, posP, undefined)
      xs = block(model, layer, xs, batch, S, posS, undefined, p.cache).x
      xp = p.x
    }
  }
  return { prefix: Fused.rmsNorm(xp, model.norm, c.normEps), suffix: Fused.rmsNorm(xs, model.norm, c.normEps) }
}

/**
 * `forward` of rows sharing a P-token prefix, the prefix computed once (`hiddenShared`): the prefix's
 * logits `[1, P, V]` (the same for every row) and the suffix's `[B, S, V]`. Differentiable.
 */
export const forwardShared = (model: Model, prefix: tf.Tensor2D, suffix: tf.Tensor2D, options: ForwardOptions = {}): { prefix: tf.Tensor3D; suffix: tf.Tensor3D } => {
  const h = hiddenShared(model, prefix, suffix, options)
  return { prefix: logitsOf(model, h.prefix, 1, prefix.shape[1]), suffix: logitsOf(model, h.suffix, suffix.shape[0], suffix.shape[1]) }
}

/** Keys and values of every layer. */
export type Cache = ReadonlyArray<LayerCache>

/**
 * One incremental step for generation: runs `ids` `[B, T]` at per-row `positions` (`[B·T]`, rotary
 * positions) on top of `cache` (keys/values of S₀ earlier slots, or none), where `keyValid` (`B·(S₀+T)`,
 * 1/0) says which slots are real tokens (left padding is 0). Slot order is causal: query t sees slots
 * ≤ S₀ + t. Returns the logits of the last position only, `[B, V]`, and the extended cache (a preallocated
 * cache, see `preallocate`, comes back as the same tensors, written in place, with its new length).
 * `head` is `outputHead(model)`, computed once per generation rather than per step; without it a tied head
 * multiplies by the embedding transposed in place.
 * With `prompts`, every row also continues one of P prompts whose keys/values are held once per prompt
 * (`Prompts`), seen before the row's own slots; `cache` and `keyValid` then cover only the row's own slots.
 * Not meant for gradients (generation runs outside them).
 */
export const step = (
  model: Model,
  ids: tf.Tensor2D,
  positions: Int32Array,
  keyValid: Uint8Array,
  cache: Cache | undefined,
  head?: tf.Tensor2D,
  prompts?: Prompts
): { logits: tf.Tensor2D; cache: Cache } => {
  const c = model.config, G = c.nHeads / c.nKvHeads
  const [batch, time] = ids.shape
  const s0 = cache === undefined ? 0 : cache[0].length ?? cache[0].k.shape[2]
  const S = s0 + time
  if (cache?.[0].length !== undefined && S > cache[0].k.shape[2]) throw new RangeError(`step: ${S} slots do not fit a preallocated cache of ${cache[0].k.shape[2]}`)
  const m = new Float32Array(batch * G * time * S)
  for (let b = 0; b < batch; b++) {
    for (let g = 0; g < G; g++) {
      for (let t = 0; t < time; t++) {
        const row = ((b * G + g) * time + t) * S
        for (let s = 0; s < S; s++) if (s > s0 + t || keyValid[b * S + s] === 0) m[row + s] = -1e9
      }
    }
  }
  const k = model.constants
  const posT = tf.tensor1d(positions, "int32")
  const take = (t: tf.Tensor2D) => tf.reshape(tf.gather(t, posT), [batch, time, 1, -1])
  const pos: Positions = { cos: take(k.cos), sin: take(k.sin), cosQ: take(k.cosQ), sinQ: take(k.sinQ), mask: tf.tensor4d(m, [batch, 1, G * time, S]) }
  const promptKeys = prompts === undefined ? undefined : promptInputs(prompts, batch)
  let x = embedLookup(model.embed, tf.reshape(ids, [-1]) as tf.Tensor1D)
  const next: Array<LayerCache> = []
  for (let l = 0; l < model.layers.length; l++) {
    const keys = promptKeys === undefined ? undefined : { ...promptKeys, k: prompts!.cache[l].k, v: prompts!.cache[l].v }
    const r = block(model, model.layers[l], x, batch, time, pos, cache?.[l], undefined, keys)
    x = r.x
    next.push(r.cache)
  }
  // Only the last position's logits are needed: [B, T, C] → [B, C].
  const last = time === 1 ? x : tf.reshape(tf.slice(tf.reshape(x, [batch, time, c.dModel]), [0, time - 1, 0], [batch, 1, c.dModel]), [batch, c.dModel])
  const n = Fused.rmsNorm(last as tf.Tensor2D, model.norm, c.normEps)
  // Without `head`, a tied embedding is read in place as Eᵀ: no [C, V] copy.
  const logits = head !== undefined ? linear(n, head) : model.lmHead !== undefined ? linear(n, model.lmHead) : (tf.matMul(n, model.embed, false, true) as tf.Tensor2D)
  return { logits, cache: next }
}

/** Prompts whose keys/values several rows share during generation (`step`). */
export interface Prompts {
  /** Per layer, [P, Hkv, Sp, hd]: the prompts' prefill (left-padded to Sp slots). */
  readonly cache: Cache
  /** R: rows per prompt. */
  readonly perPrompt: number
  /** Per batch row, p·R + r: prompt p's r-th row (each at most once). */
  readonly rowOf: Int32Array
  /** P·Sp, 1/0: which prompt slots are real tokens. */
  readonly valid: Uint8Array
}

/** The index tensors and prompt mask of `Prompts` for a batch of B rows. */
const promptInputs = (prompts: Prompts, batch: number): Omit<PromptKeys, "k" | "v"> => {
  const [np, , sp] = prompts.cache[0].k.shape
  const R = prompts.perPrompt
  const slots = new Int32Array(np * R).fill(batch)
  const mask = new Float32Array(batch * sp)
  let inOrder = batch === np * R
  for (let i = 0; i < batch; i++) {
    const j = prompts.rowOf[i], p = Math.floor(j / R)
    if (slots[j] !== batch) throw new RangeError(`step: prompt row ${j} appears twice in rowOf`)
    slots[j] = i
    inOrder &&= j === i
    for (let s = 0; s < sp; s++) if (prompts.valid[p * sp + s] === 0) mask[i * sp + s] = -1e9
  }
  const m = tf.tensor4d(mask, [batch, 1, 1, sp])
  if (Decode.available()) {
    const promptOf = Int32Array.from(prompts.rowOf.subarray(0, batch), (j) => Math.floor(j / R))
    return { perPrompt: R, mask: m, promptOf: tf.tensor1d(promptOf, "int32") }
  }
  // every row present in order (no row dropped yet): the gathers are identities
  if (inOrder) return { perPrompt: R, mask: m }
  return { perPrompt: R, slots: tf.tensor1d(slots, "int32"), rows: tf.tensor1d(prompts.rowOf.subarray(0, batch), "int32"), mask: m }
}

/** The output head as `[C, V]`: the untied head, or the transposed embedding (a new tensor) when tied. */
export const outputHead = (model: Model): tf.Tensor2D =>
  model.lmHead !== undefined ? (model.lmHead as tf.Tensor2D) : (tf.transpose(model.embed) as tf.Tensor2D)
