/**
 * Model checkpoints as a Hugging Face-style directory: `model.safetensors` (HF tensor names, float32)
 * and `config.json` (HF keys), so a Llama or Qwen2 model whose shapes fit loads directly and ours load
 * in HF tooling. Both files are written atomically; save → load is bitwise.
 *
 * Loading checks `config.json` against a schema, then every tensor the config implies: a missing
 * tensor, a shape mismatch or an unexpected tensor is a `CheckpointError` naming the file and tensor.
 * Qwen2's q/k/v biases load when present (or when the architecture says Qwen2); HF's stored
 * `rotary_emb.inv_freq` buffers are ignored (we recompute them), as is a `lm_head.weight` stored
 * beside tied embeddings. Sharded checkpoints (`model.safetensors.index.json`) are not supported.
 */
import { Effect, Schema } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { CheckpointError, read, write, writeAtomic, type Entry } from "./Safetensors.js"
import * as Transformer from "./Transformer.js"

export { CheckpointError } from "./Safetensors.js"

/** File names inside a checkpoint directory. */
export const WEIGHTS_FILE = "model.safetensors"
export const CONFIG_FILE = "config.json"

/** The HF `config.json` keys we read (others are ignored). */
export const HfConfig = Schema.Struct({
  architectures: Schema.optionalKey(Schema.Array(Schema.String)),
  vocab_size: Schema.Int,
  hidden_size: Schema.Int,
  num_hidden_layers: Schema.Int,
  num_attention_heads: Schema.Int,
  num_key_value_heads: Schema.optionalKey(Schema.Int),
  intermediate_size: Schema.Int,
  max_position_embeddings: Schema.Int,
  rope_theta: Schema.optionalKey(Schema.Number),
  rms_norm_eps: Schema.Number,
  tie_word_embeddings: Schema.optionalKey(Schema.Boolean),
  head_dim: Schema.optionalKey(Schema.Int),
  hidden_act: Schema.optionalKey(Schema.String),
  attention_bias: Schema.optionalKey(Schema.Boolean),
  rope_scaling: Schema.optionalKey(Schema.Unknown)
})
/** The HF `config.json` keys we read. */
export type HfConfig = typeof HfConfig.Type

/** Our config as HF `config.json` content. */
export const toHfConfig = (c: Transformer.Config): Record<string, unknown> => {
  const qwen = c.attentionBias === true
  return {
    architectures: [qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM"],
    model_type: qwen ? "qwen2" : "llama",
    vocab_size: c.vocabSize,
    hidden_size: c.dModel,
    num_hidden_layers: c.nLayers,
    num_attention_heads: c.nHeads,
    num_key_value_heads: c.nKvHeads,
    head_dim: Transformer.headDim(c),
    intermediate_size: c.dFf,
    max_position_embeddings: c.maxSeqLen,
    rope_theta: c.ropeTheta,
    rms_norm_eps: c.normEps,
    tie_word_embeddings: c.tieEmbeddings,
    hidden_act: "silu",
    torch_dtype: "float32"
  }
}

/** HF config → our config; `hasBiases` says whether the weights carry q/k/v biases. */
export const fromHfConfig = (h: HfConfig, hasBiases: boolean): Transformer.Config | string => {
  const arch = h.architectures ?? []
  if (arch.length > 0 && !arch.some((a) => /^(Llama|Qwen2|Mistral)ForCausalLM$/.test(a))) return `architecture ${arch.join(", ")} is not a Llama/Qwen2-style decoder`
  if (h.hidden_act !== undefined && h.hidden_act !== "silu") return `hidden_act ${h.hidden_act} is not supported (only silu / SwiGLU)`
  if (h.head_dim !== undefined && h.head_dim * h.num_attention_heads !== h.hidden_size) return `head_dim ${h.head_dim} × ${h.num_attention_heads} heads ≠ hidden_size ${h.hidden_size}`
  if (h.rope_scaling !== undefined && h.rope_scaling !== null) return "rope_scaling is not supported"
  const config: Transformer.Config = {
    vocabSize: h.vocab_size,
    dModel: h.hidden_size,
    nLayers: h.num_hidden_layers,
    nHeads: h.num_attention_heads,
    nKvHeads: h.num_key_value_heads ?? h.num_attention_heads,
    dFf: h.intermediate_size,
    maxSeqLen: h.max_position_embeddings,
    ropeTheta: h.rope_theta ?? 10000,
    normEps: h.rms_norm_eps,
    tieEmbeddings: h.tie_word_embeddings ?? false,
    ...(hasBiases || h.attention_bias === true || arch.includes("Qwen2ForCausalLM") ? { attentionBias: true } : {})
  }
  const bad = Transformer.problems(config)
  return bad.length > 0 ? bad.join("; ") : config
}

/** Writes `model` to `dir` (created if needed): `model.safetensors` then `config.json`, each atomically. */
export const save = Effect.fnUntraced(function*(dir: string, model: Transformer.Model): Effect.fn.Return<void, CheckpointError> {
  const tensors: Record<string, Entry> = {}
  const arrays = Transformer.toArrays(model)
  for (const { name, shape } of Transformer.weightShapes(model.config)) tensors[name] = { dtype: "F32", shape, data: arrays.get(name)! }
  yield* write(path.join(dir, WEIGHTS_FILE), tensors, { format: "pt", producer: "r1flow" })
  yield* writeAtomic(path.join(dir, CONFIG_FILE), JSON.stringify(toHfConfig(model.config), null, 2) + "\n")
})

const readJson = (file: string): Effect.Effect<unknown, CheckpointError> =>
  Effect.tryPromise({
    try: async () => JSON.parse(await fs.readFile(file, "utf8")) as unknown,
    catch: (e) => new CheckpointError({ path: file, message: `cannot read JSON: ${e instanceof Error ? e.message : String(e)}` })
  })

/** Loads a checkpoint directory into a new (trainable) model. */
export const load = Effect.fnUntraced(function*(dir: string): Effect.fn.Return<Transformer.Model, CheckpointError> {
  const configFile = path.join(dir, CONFIG_FILE)
  const weightsFile = path.join(dir, WEIGHTS_FILE)
  const raw = yield* readJson(configFile)
  const hf = yield* Schema.decodeUnknownEffect(HfConfig)(raw).pipe(
    Effect.mapError((e) => new CheckpointError({ path: configFile, message: `bad config: ${e.message}` }))
  )
  const exists = yield* Effect.promise(() => fs.access(weightsFile).then(() => true, () => false))
  if (!exists) {
    const sharded = yield* Effect.promise(() => fs.access(path.join(dir, "model.safetensors.index.json")).then(() => true, () => false))
    return yield* new CheckpointError({ path: weightsFile, message: sharded ? "sharded checkpoints are not supported; merge the shards into one model.safetensors" : "weights file is missing" })
  }
  const { tensors } = yield* read(weightsFile)
  const config = fromHfConfig(hf, "model.layers.0.self_attn.q_proj.bias" in tensors)
  if (typeof config === "string") return yield* new CheckpointError({ path: configFile, message: `unsupported config: ${config}` })
  const arrays = new Map<string, Float32Array>()
  for (const { name, shape } of Transformer.weightShapes(config)) {
    const t = tensors[name]
    if (t === undefined) return yield* new CheckpointError({ path: weightsFile, tensor: name, message: "tensor is missing" })
    if (!(t.data instanceof Float32Array)) return yield* new CheckpointError({ path: weightsFile, tensor: name, message: `dtype ${t.dtype} is not a float type` })
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      return yield* new CheckpointError({ path: weightsFile, tensor: name, message: `shape [${t.shape}] does not match [${shape}] expected from ${CONFIG_FILE}` })
    }
    arrays.set(name, t.data)
  }
  for (const name of Object.keys(tensors)) {
    const ignorable = name.endsWith("rotary_emb.inv_freq") || (name === "lm_head.weight" && config.tieEmbeddings)
    if (!arrays.has(name) && !ignorable) {
      return yield* new CheckpointError({ path: weightsFile, tensor: name, message: "unexpected tensor (not part of this architecture)" })
    }
  }
  return yield* Effect.try({
    try: () => Transformer.fromArrays(config, arrays),
    catch: (e) => new CheckpointError({ path: weightsFile, message: e instanceof Error ? e.message : String(e) })
  })
})
