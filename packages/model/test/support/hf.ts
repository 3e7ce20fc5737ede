/**
 * Tiny random checkpoints in Hugging Face layout, written the way `save_pretrained` lays them out (HF
 * `config.json` keys of each family, Linear weights `[out, in]`, `model.safetensors` or shards + index),
 * independently of `Checkpoint.exportHf`, so the loader is tested against the layout rather than itself.
 */
import { Rng } from "@r1flow/core"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { Safetensors } from "../../src/index.js"

/** The families (and family variants) the helper writes. */
export const families = ["llama", "llama3", "llama-linear", "smollm2", "mistral", "qwen2", "qwen2-untied", "qwen3"] as const
export type Family = (typeof families)[number]

const base = {
  vocab_size: 37,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 64,
  hidden_act: "silu",
  rms_norm_eps: 1e-6,
  initializer_range: 0.02,
  use_cache: true,
  bos_token_id: 1,
  eos_token_id: 2,
  transformers_version: "4.51.0"
}

/** `config.json` of each family, as transformers writes it (keys it carries, values that exercise the code). */
export const hfConfig = (family: Family, torchDtype: string): Record<string, unknown> => {
  switch (family) {
    case "llama":
      return { architectures: ["LlamaForCausalLM"], model_type: "llama", ...base, rope_theta: 10000, rope_scaling: null, attention_bias: false, mlp_bias: false, tie_word_embeddings: false, pretraining_tp: 1, torch_dtype: torchDtype }
    case "llama3":
      // hd = 4 here (16 / 4) would give two frequencies; with θ = 10000 and hd 8 the four wavelengths 6.3, 63, 628, 6283
      // fall in the kept (< 16), smoothed (16…64) and scaled (> 64) bands of original 64 / high 4 / low 1.
      return {
        architectures: ["LlamaForCausalLM"], model_type: "llama", ...base, num_attention_heads: 2, num_key_value_heads: 1, rope_theta: 10000,
        rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 },
        max_position_embeddings: 512, attention_bias: false, mlp_bias: false, tie_word_embeddings: false, torch_dtype: torchDtype
      }
    case "llama-linear":
      // Linear interpolation (transformers' `linear`): every rotary frequency divided by the factor.
      return { architectures: ["LlamaForCausalLM"], model_type: "llama", ...base, rope_theta: 10000, rope_scaling: { rope_type: "linear", factor: 4 }, attention_bias: false, mlp_bias: false, tie_word_embeddings: false, torch_dtype: torchDtype }
    case "smollm2":
      return { architectures: ["LlamaForCausalLM"], model_type: "llama", ...base, num_key_value_heads: 4, rope_theta: 100000, rope_scaling: null, tie_word_embeddings: true, attention_bias: false, mlp_bias: false, head_dim: 4, torch_dtype: torchDtype }
    case "mistral":
      return { architectures: ["MistralForCausalLM"], model_type: "mistral", ...base, rope_theta: 1000000, sliding_window: null, tie_word_embeddings: false, torch_dtype: torchDtype }
    case "qwen2":
    case "qwen2-untied":
      return {
        architectures: ["Qwen2ForCausalLM"], model_type: "qwen2", ...base, rope_theta: 1000000, use_sliding_window: false, sliding_window: 32,
        max_window_layers: 2, attention_dropout: 0, tie_word_embeddings: family === "qwen2", torch_dtype: torchDtype
      }
    case "qwen3":
      return {
        architectures: ["Qwen3ForCausalLM"], model_type: "qwen3", ...base, head_dim: 8, rope_theta: 1000000, rope_scaling: null, attention_bias: false,
        use_sliding_window: false, sliding_window: null, max_window_layers: 2, tie_word_embeddings: true, torch_dtype: torchDtype
      }
  }
}

/** Names and HF shapes `[out, in]` of a family's tensors, in the order `save_pretrained` would list them. */
export const tensorShapes = (config: Record<string, unknown>): Array<[string, Array<number>]> => {
  const c = config as typeof base & { model_type: string; head_dim?: number; tie_word_embeddings: boolean }
  const hd = c.head_dim ?? c.hidden_size / c.num_attention_heads, C = c.hidden_size, q = c.num_attention_heads * hd, kv = c.num_key_value_heads * hd
  const out: Array<[string, Array<number>]> = [["model.embed_tokens.weight", [c.vocab_size, C]]]
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}.`
    out.push([`${p}input_layernorm.weight`, [C]], [`${p}self_attn.q_proj.weight`, [q, C]], [`${p}self_attn.k_proj.weight`, [kv, C]], [`${p}self_attn.v_proj.weight`, [kv, C]])
    if (c.model_type === "qwen2") out.push([`${p}self_attn.q_proj.bias`, [q]], [`${p}self_attn.k_proj.bias`, [kv]], [`${p}self_attn.v_proj.bias`, [kv]])
    out.push([`${p}self_attn.o_proj.weight`, [C, q]])
    if (c.model_type === "qwen3") out.push([`${p}self_attn.q_norm.weight`, [hd]], [`${p}self_attn.k_norm.weight`, [hd]])
    out.push([`${p}post_attention_layernorm.weight`, [C]], [`${p}mlp.gate_proj.weight`, [c.intermediate_size, C]], [`${p}mlp.up_proj.weight`, [c.intermediate_size, C]], [`${p}mlp.down_proj.weight`, [C, c.intermediate_size]])
  }
  out.push(["model.norm.weight", [C]])
  if (!c.tie_word_embeddings) out.push(["lm_head.weight", [c.vocab_size, C]])
  return out
}

/** Options of `writeCheckpoint`. */
export interface WriteOptions {
  readonly dtype?: Safetensors.FloatDType
  /** Number of shard files (1: a single `model.safetensors`, no index). */
  readonly shards?: number
  readonly seed?: number
  /** Also store HF's old `rotary_emb.inv_freq` buffers (loaders must ignore them). */
  readonly invFreq?: boolean
}

/** What was written: the directory, its config, and each tensor's values as stored (widened to float32). */
export interface Written {
  readonly dir: string
  readonly config: Record<string, unknown>
  readonly values: Map<string, Float32Array>
}

const torchName: Record<Safetensors.FloatDType, string> = { F32: "float32", F16: "float16", BF16: "bfloat16" }

const widen = (bits: Uint16Array, dtype: "F16" | "BF16"): Float32Array =>
  dtype === "BF16" ? new Float32Array(Uint32Array.from(bits, (h) => h << 16).buffer) : Float32Array.from(bits, Safetensors.f16ToF32)

/** Writes a tiny random checkpoint of `family` into `dir` (a new temp directory by default). */
export const writeCheckpoint = async (family: Family, options: WriteOptions = {}, dir?: string): Promise<Written> => {
  const dtype = options.dtype ?? "F32", shards = options.shards ?? 1
  const out = dir ?? (await fs.mkdtemp(path.join(os.tmpdir(), `r1flow-hf-${family}-`)))
  const config = hfConfig(family, torchName[dtype])
  const rng = Rng.make(options.seed ?? 1, `hf-${family}`)
  const tensors: Array<[string, Safetensors.Entry]> = []
  const values = new Map<string, Float32Array>()
  for (const [name, shape] of tensorShapes(config)) {
    const n = shape.reduce((a, b) => a * b, 1)
    const f = new Float32Array(n)
    // Spread wide enough that logits are far from uniform; norms near 1 (q/k norms too).
    for (let i = 0; i < n; i++) f[i] = (name.endsWith("norm.weight") ? 1 : 0) + rng.normal() * (name.endsWith("norm.weight") ? 0.2 : 0.4)
    if (dtype === "F32") {
      tensors.push([name, { dtype, shape, data: f }])
      values.set(name, f)
    } else {
      const bits = new Uint16Array(new Uint8Array(Safetensors.narrow(f, dtype)).buffer)
      tensors.push([name, { dtype, shape, data: bits }])
      values.set(name, widen(bits, dtype))
    }
    if (options.invFreq === true && name.endsWith("self_attn.o_proj.weight")) {
      tensors.push([name.replace("o_proj.weight", "rotary_emb.inv_freq"), { dtype: "F32", shape: [2], data: new Float32Array([1, 0.1]) }])
    }
  }
  await fs.mkdir(out, { recursive: true })
  await fs.writeFile(path.join(out, "config.json"), JSON.stringify(config, null, 2))
  if (shards === 1) {
    await fs.writeFile(path.join(out, "model.safetensors"), Safetensors.encode(Object.fromEntries(tensors), { format: "pt" }))
  } else {
    const per = Math.ceil(tensors.length / shards)
    const weightMap: Record<string, string> = {}
    let total = 0
    for (let s = 0; s < shards; s++) {
      const file = `model-${String(s + 1).padStart(5, "0")}-of-${String(shards).padStart(5, "0")}.safetensors`
      // Shards list their tensors in reverse: the index, not the order, says where a tensor is.
      const part = tensors.slice(s * per, (s + 1) * per).reverse()
      for (const [name, t] of part) {
        weightMap[name] = file
        total += t.data.byteLength
      }
      await fs.writeFile(path.join(out, file), Safetensors.encode(Object.fromEntries(part), { format: "pt" }))
    }
    await fs.writeFile(path.join(out, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2))
  }
  await fs.writeFile(path.join(out, "generation_config.json"), JSON.stringify({ bos_token_id: 1, eos_token_id: [2, 3], do_sample: true, temperature: 0.6 }, null, 2))
  return { dir: out, config, values }
}
