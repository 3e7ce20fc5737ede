/**
 * Hugging Face `config.json` ↔ `Transformer.Config`, for the decoder families whose forward this model
 * computes exactly: `llama` (Llama 1–3, SmolLM2; Llama 3's and linear `rope_scaling`), `mistral` (without a sliding
 * window), `qwen2` (Qwen2 / Qwen2.5: q/k/v biases) and `qwen3` (per-head q/k RMSNorm, explicit `head_dim`).
 *
 * Keys absent from a file take the defaults of transformers' config class of that family (`rms_norm_eps`
 * 1e-6, `rope_theta` 10000, untied head, `head_dim` hidden/heads, or 128 for Qwen3, …). Anything the
 * forward would not reproduce is refused with the key named: another `model_type`, an activation other
 * than SiLU, a rope type other than default / linear / llama3 (dynamic NTK and yarn change the table per sequence length or rescale attention), a partial rotary factor, sliding-window attention,
 * biases on o_proj or the MLP, quantised weights. transformers v5's `rope_parameters` is read like
 * `rope_theta` + `rope_scaling`.
 */
import { CheckpointError } from "./Safetensors.js"
import * as Transformer from "./Transformer.js"

/** Model families this reader understands (`model_type`). */
export type Family = "llama" | "mistral" | "qwen2" | "qwen3"

/** The `architectures` entry of each family. */
export const architecture: Record<Family, string> = {
  llama: "LlamaForCausalLM",
  mistral: "MistralForCausalLM",
  qwen2: "Qwen2ForCausalLM",
  qwen3: "Qwen3ForCausalLM"
}

const families = Object.keys(architecture) as ReadonlyArray<Family>

/** transformers' default `max_position_embeddings` per family, used when the key is absent. */
const defaultMaxPositions: Record<Family, number> = { llama: 2048, mistral: 131072, qwen2: 32768, qwen3: 32768 }

/** A parsed `config.json`: its family, our config, and the file's own object (kept for export). */
export interface Parsed {
  readonly family: Family
  readonly config: Transformer.Config
  /** `torch_dtype` (or v5's `dtype`) as written, if any. */
  readonly torchDtype: string | undefined
  readonly raw: Readonly<Record<string, unknown>>
}

type Raw = Readonly<Record<string, unknown>>

/** A refusal: the key at fault and why. */
class Bad {
  constructor(readonly key: string, readonly message: string) {}
}

const isRecord = (x: unknown): x is Raw => typeof x === "object" && x !== null && !Array.isArray(x)

const show = (x: unknown) => JSON.stringify(x) ?? String(x)

/** `obj[key]`, absent or null → undefined; else checked with `ok`. Throws `Bad`. */
const opt = <A>(obj: Raw, key: string, what: string, ok: (x: unknown) => x is A, prefix = ""): A | undefined => {
  const v = obj[key]
  if (v === undefined || v === null) return undefined
  if (!ok(v)) throw new Bad(prefix + key, `expected ${what}, got ${show(v)}`)
  return v
}
const req = <A>(obj: Raw, key: string, what: string, ok: (x: unknown) => x is A, prefix = ""): A => {
  const v = opt(obj, key, what, ok, prefix)
  if (v === undefined) throw new Bad(prefix + key, "is missing")
  return v
}
const isInt = (x: unknown): x is number => Number.isInteger(x) && (x as number) > 0
const isNum = (x: unknown): x is number => typeof x === "number" && Number.isFinite(x)
const isBool = (x: unknown): x is boolean => typeof x === "boolean"
const isStr = (x: unknown): x is string => typeof x === "string"

const familyOf = (raw: Raw): Family => {
  const type = opt(raw, "model_type", "a string", isStr)
  const arch = opt(raw, "architectures", "a list of strings", (x): x is Array<string> => Array.isArray(x) && x.every(isStr))
  if (type === undefined) {
    const f = families.find((f) => arch?.includes(architecture[f]) === true)
    if (f === undefined) throw new Bad("model_type", `is missing and architectures ${show(arch ?? [])} names no supported family (${families.join(", ")})`)
    return f
  }
  const f = families.find((f) => f === type)
  if (f === undefined) throw new Bad("model_type", `${show(type)} is not supported (supported: ${families.join(", ")})`)
  if (arch !== undefined && arch.length > 0 && !arch.includes(architecture[f])) {
    throw new Bad("architectures", `${show(arch)} has no ${architecture[f]} (only the causal-LM head is supported)`)
  }
  return f
}

/** The rotary settings: theta and a Llama 3 or linear scaling, from `rope_theta` + `rope_scaling` or v5 `rope_parameters`. */
const ropeOf = (raw: Raw): { theta: number; scaling: Transformer.RopeScaling | undefined } => {
  const params = opt(raw, "rope_parameters", "an object", isRecord)
  const [where, scaling] = params !== undefined ? ["rope_parameters", params] : ["rope_scaling", opt(raw, "rope_scaling", "an object or null", isRecord)]
  const theta = (params === undefined ? undefined : opt(params, "rope_theta", "a number", isNum, `${where}.`)) ?? opt(raw, "rope_theta", "a number", isNum) ?? 10000
  if (scaling === undefined) return { theta, scaling: undefined }
  const typeKey = "rope_type" in scaling ? "rope_type" : "type"
  const type = opt(scaling, typeKey, "a string", isStr, `${where}.`) ?? "default"
  if (type === "default") return { theta, scaling: undefined }
  const num = (k: string) => req(scaling, k, "a number", isNum, `${where}.`)
  if (type === "linear") {
    const factor = num("factor")
    if (!(factor > 0)) throw new Bad(`${where}.factor`, `linear needs factor > 0, got ${show(factor)}`)
    return { theta, scaling: { ropeType: "linear", factor } }
  }
  // dynamic NTK rescales θ with each sequence's length, yarn also rescales the attention: neither is the fixed table this model holds.
  if (type !== "llama3") throw new Bad(`${where}.${typeKey}`, `${show(type)} is not supported (supported: default, linear, llama3)`)
  const out: Transformer.RopeScaling = {
    ropeType: "llama3",
    factor: num("factor"),
    lowFreqFactor: num("low_freq_factor"),
    highFreqFactor: num("high_freq_factor"),
    originalMaxPositionEmbeddings: num("original_max_position_embeddings")
  }
  if (!(out.factor > 0 && out.lowFreqFactor > 0 && out.highFreqFactor > out.lowFreqFactor && out.originalMaxPositionEmbeddings > 0)) {
    throw new Bad(where, `llama3 needs factor > 0 and high_freq_factor > low_freq_factor > 0, got ${show(scaling)}`)
  }
  return { theta, scaling: out }
}

const parseOrThrow = (raw: Raw): Parsed => {
  const family = familyOf(raw)
  if (raw.quantization_config !== undefined && raw.quantization_config !== null) throw new Bad("quantization_config", "quantised checkpoints are not supported")
  const act = opt(raw, "hidden_act", "a string", isStr) ?? opt(raw, "hidden_activation", "a string", isStr)
  if (act !== undefined && act !== "silu") throw new Bad("hidden_act", `${show(act)} is not supported (only silu, SwiGLU)`)
  if (opt(raw, "mlp_bias", "a boolean", isBool) === true) throw new Bad("mlp_bias", "MLP biases are not supported")
  if (family !== "qwen2" && opt(raw, "attention_bias", "a boolean", isBool) === true) {
    throw new Bad("attention_bias", `true is not supported for ${family} (it adds an o_proj bias)`)
  }
  const partial = opt(raw, "partial_rotary_factor", "a number", isNum)
  if (partial !== undefined && partial !== 1) throw new Bad("partial_rotary_factor", `${partial} is not supported (only 1)`)
  const int = (k: string) => req(raw, k, "a positive integer", isInt)
  const dModel = int("hidden_size"), nHeads = int("num_attention_heads")
  const maxSeqLen = opt(raw, "max_position_embeddings", "a positive integer", isInt) ?? defaultMaxPositions[family]
  // Sliding windows: Qwen's only apply with use_sliding_window; Mistral's (and any other) whenever set below the context.
  if (opt(raw, "use_sliding_window", "a boolean", isBool) === true) throw new Bad("use_sliding_window", "sliding-window attention is not supported")
  const window = opt(raw, "sliding_window", "a positive integer or null", isInt)
  if (family !== "qwen2" && family !== "qwen3" && window !== undefined && window < maxSeqLen) {
    throw new Bad("sliding_window", `${window} < max_position_embeddings ${maxSeqLen}: sliding-window attention is not supported`)
  }
  const layerTypes = opt(raw, "layer_types", "a list", Array.isArray)
  if (layerTypes?.some((t) => t !== "full_attention") === true) throw new Bad("layer_types", "only full_attention layers are supported")
  const { theta, scaling } = ropeOf(raw)
  const headDim = opt(raw, "head_dim", "a positive integer", isInt) ?? (family === "qwen3" ? 128 : undefined)
  const config: Transformer.Config = {
    vocabSize: int("vocab_size"),
    dModel,
    nLayers: int("num_hidden_layers"),
    nHeads,
    nKvHeads: opt(raw, "num_key_value_heads", "a positive integer", isInt) ?? nHeads,
    dFf: int("intermediate_size"),
    maxSeqLen,
    ropeTheta: theta,
    normEps: opt(raw, "rms_norm_eps", "a number", isNum) ?? 1e-6,
    tieEmbeddings: opt(raw, "tie_word_embeddings", "a boolean", isBool) ?? false,
    ...(family === "qwen2" ? { attentionBias: true } : {}),
    // Stated only when it differs from hidden/heads, so such configs stay exactly what they were.
    ...(headDim !== undefined && headDim * nHeads !== dModel ? { headDim } : {}),
    ...(family === "qwen3" ? { qkNorm: true } : {}),
    ...(scaling === undefined ? {} : { ropeScaling: scaling })
  }
  const bad = Transformer.problems(config)
  if (bad.length > 0) throw new Bad("hidden_size", `the shapes do not make a model: ${bad.join("; ")}`)
  const torchDtype = opt(raw, "torch_dtype", "a string", isStr) ?? opt(raw, "dtype", "a string", isStr)
  return { family, config, torchDtype, raw }
}

/** Reads a parsed `config.json` (`file` names it in errors). */
export const parse = (raw: unknown, file: string): Parsed | CheckpointError => {
  if (!isRecord(raw)) return new CheckpointError({ path: file, message: "not a JSON object" })
  try {
    return parseOrThrow(raw)
  } catch (e) {
    if (e instanceof Bad) return new CheckpointError({ path: file, key: e.key, message: `${e.key} ${e.message}` })
    throw e
  }
}

/** The family a config without a recorded source is written as. */
export const familyFor = (c: Transformer.Config): Family => (c.qkNorm === true ? "qwen3" : c.attentionBias === true ? "qwen2" : "llama")

/** Why `family` cannot express `c` (undefined when it can). */
export const mismatch = (c: Transformer.Config, family: Family): string | undefined => {
  const qk = c.qkNorm === true, bias = c.attentionBias === true
  if (family === "qwen3") return qk && !bias ? undefined : "qwen3 has q/k norms and no q/k/v biases"
  if (family === "qwen2") return bias && !qk ? undefined : "qwen2 has q/k/v biases and no q/k norms"
  return !bias && !qk ? undefined : `${family} has neither q/k/v biases nor q/k norms`
}

/** Keys this module writes; the rest of a source `config.json` is kept as it was. */
const written = [
  "architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
  "num_key_value_heads", "head_dim", "max_position_embeddings", "rope_theta", "rope_scaling", "rope_parameters", "rms_norm_eps",
  "tie_word_embeddings", "hidden_act", "attention_bias", "torch_dtype", "dtype"
]

/**
 * `config.json` content for `c` as `family`, stored in `torchDtype`. `base` is the source's own file: its
 * other keys (token ids, sliding-window flags, versions) are kept, and its `max_position_embeddings` when a
 * load capped the context.
 */
export const toJson = (c: Transformer.Config, family: Family, torchDtype: string, base: Raw = {}): Record<string, unknown> => {
  const kept = Object.fromEntries(Object.entries(base).filter(([k]) => !written.includes(k)))
  const s = c.ropeScaling
  const scaling = s === undefined ? null : s.ropeType === "linear" ? { rope_type: "linear", factor: s.factor } : {
    rope_type: s.ropeType,
    factor: s.factor,
    low_freq_factor: s.lowFreqFactor,
    high_freq_factor: s.highFreqFactor,
    original_max_position_embeddings: s.originalMaxPositionEmbeddings
  }
  const baseMax = isInt(base.max_position_embeddings) ? base.max_position_embeddings : 0
  const rope = isRecord(base.rope_parameters)
    ? { rope_parameters: { ...(scaling ?? { rope_type: "default" }), rope_theta: c.ropeTheta } }
    : { rope_theta: c.ropeTheta, rope_scaling: scaling }
  return {
    architectures: [architecture[family]],
    model_type: family,
    vocab_size: c.vocabSize,
    hidden_size: c.dModel,
    intermediate_size: c.dFf,
    num_hidden_layers: c.nLayers,
    num_attention_heads: c.nHeads,
    num_key_value_heads: c.nKvHeads,
    head_dim: Transformer.headDim(c),
    max_position_embeddings: Math.max(c.maxSeqLen, baseMax),
    ...rope,
    rms_norm_eps: c.normEps,
    tie_word_embeddings: c.tieEmbeddings,
    hidden_act: "silu",
    ...(family === "qwen2" ? {} : { attention_bias: false }),
    ...kept,
    torch_dtype: torchDtype
  }
}
