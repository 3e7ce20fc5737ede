/**
 * Model checkpoints as Hugging Face model directories, both ways.
 *
 * In (`loadHf`, `load`, `inspect`): `config.json` (read by `HfConfig`: Llama incl. Llama 3 `rope_scaling`,
 * SmolLM2, Mistral, Qwen2/2.5, Qwen3) and either `model.safetensors` or `model.safetensors.index.json` with
 * its shards, tensors in F32, F16 or BF16 (widened to float32). Before any weight is read, every shard's
 * header is validated and every tensor the config implies is checked for presence, float dtype and shape;
 * a missing shard, a tensor the index names but its shard lacks, a truncated shard, a shape mismatch or an
 * unexpected tensor is a `CheckpointError` naming the file and tensor (or the config key). Weights are then
 * read one tensor at a time by positioned reads. HF's stored `rotary_emb.inv_freq` buffers are ignored (we
 * recompute them), as is a `lm_head.weight` stored beside tied embeddings. Like transformers, a directory
 * holding both layouts is read from `model.safetensors`.
 *
 * Out (`exportHf`): `config.json` of the family the model came from (its other keys kept), safetensors in
 * the dtype asked (default: the source's), split into `model-0000i-of-0000N.safetensors` + index above
 * `maxShardSize` (transformers' `max_shard_size`, default 5GB), `generation_config.json`, and the tokenizer
 * files of a source directory. `save` is r1flow's own run checkpoint: the same layout, float32, one file, so
 * save → load is bitwise. Every file is written atomically (temp + rename).
 */
import { Effect } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import * as HfConfig from "./HfConfig.js"
import * as Lora from "./Lora.js"
import { CheckpointError, narrow, readHeader, withReader, writeAtomic, writeFile, type FloatDType, type Source as TensorSource, type TensorInfo } from "./Safetensors.js"
import * as Transformer from "./Transformer.js"

export { CheckpointError, describe } from "./Safetensors.js"

/** File names inside a checkpoint directory. */
export const WEIGHTS_FILE = "model.safetensors"
export const INDEX_FILE = "model.safetensors.index.json"
export const CONFIG_FILE = "config.json"
export const GENERATION_CONFIG_FILE = "generation_config.json"

/** Tokenizer files `exportHf` copies from a tokenizer directory, when there. */
export const TOKENIZER_FILES = [
  "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
  "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json"
] as const

/** torch dtype names ↔ safetensors dtypes. */
export type TorchDtype = "float32" | "float16" | "bfloat16"
const stored: Record<TorchDtype, FloatDType> = { float32: "F32", float16: "F16", bfloat16: "BF16" }
const torchOf: Record<FloatDType, TorchDtype> = { F32: "float32", F16: "float16", BF16: "bfloat16" }

/** Where a loaded model came from: what `exportHf` needs to write it back the same way. */
export interface Origin {
  readonly dir: string
  readonly family: HfConfig.Family
  /** The dtype its weights were stored in (that of `model.embed_tokens.weight`). */
  readonly dtype: TorchDtype
  /** The source's `config.json` object. */
  readonly hfConfig: Readonly<Record<string, unknown>>
}

/** A directory checked without reading weights: the config, the origin, and where each tensor lies. */
export interface Inspected {
  readonly config: Transformer.Config
  readonly origin: Origin
  /** Every expected weight (HF name, `weightShapes` order) and where it is stored. */
  readonly tensors: ReadonlyArray<TensorInfo & { readonly file: string }>
}

/** A loaded model and where it came from. */
export interface Loaded {
  readonly model: Transformer.Model
  readonly origin: Origin
}

/** Options of `inspect` / `loadHf`. */
export interface LoadOptions {
  /**
   * Rotary tables for this many positions instead of `max_position_embeddings` (a run's context is often far
   * shorter than a model's, and the tables are `[maxSeqLen, headDim]`); at most the config's. The maths is
   * unchanged (Llama 3 scaling depends on `original_max_position_embeddings` only).
   */
  readonly maxSeqLen?: number
  /** Variables trainable (default true). */
  readonly trainable?: boolean
}

const message = (e: unknown) => (e instanceof Error ? e.message : String(e))

const exists = (file: string) => Effect.promise(() => fs.access(file).then(() => true, () => false))

const readJson = (file: string, what: string): Effect.Effect<unknown, CheckpointError> =>
  Effect.tryPromise({
    try: async () => JSON.parse(await fs.readFile(file, "utf8")) as unknown,
    catch: (e) => new CheckpointError({ path: file, message: `cannot read ${what}: ${message(e)}` })
  })

/** Every tensor of the directory's safetensors file(s), by name, with the file it lies in. */
const layoutOf = Effect.fnUntraced(function*(dir: string): Effect.fn.Return<Map<string, TensorInfo & { file: string }>, CheckpointError> {
  const single = path.join(dir, WEIGHTS_FILE), indexFile = path.join(dir, INDEX_FILE)
  const out = new Map<string, TensorInfo & { file: string }>()
  if (yield* exists(single)) {
    for (const t of (yield* readHeader(single)).tensors.values()) out.set(t.name, { ...t, file: single })
    return out
  }
  if (!(yield* exists(indexFile))) return yield* new CheckpointError({ path: dir, message: `no ${WEIGHTS_FILE} or ${INDEX_FILE}` })
  const index = yield* readJson(indexFile, "the shard index")
  const map = (index as { weight_map?: unknown } | null)?.weight_map
  if (map === null || typeof map !== "object" || Array.isArray(map) || !Object.values(map).every((f) => typeof f === "string")) {
    return yield* new CheckpointError({ path: indexFile, key: "weight_map", message: "weight_map must be an object of tensor name → shard file" })
  }
  const byShard = new Map<string, Array<string>>()
  for (const [name, shard] of Object.entries(map as Record<string, string>)) {
    if (shard.includes("/") || shard.includes("\\") || shard.startsWith(".")) {
      return yield* new CheckpointError({ path: indexFile, key: `weight_map.${name}`, tensor: name, message: `shard ${JSON.stringify(shard)} is not a file name in the directory` })
    }
    byShard.set(shard, [...(byShard.get(shard) ?? []), name])
  }
  for (const [shard, names] of byShard) {
    const file = path.join(dir, shard)
    if (!(yield* exists(file))) {
      return yield* new CheckpointError({ path: file, tensor: names[0], key: `weight_map.${names[0]}`, message: `shard file is missing (${INDEX_FILE} puts ${names.length} tensors in it)` })
    }
    const header = yield* readHeader(file)
    for (const name of names) {
      const t = header.tensors.get(name)
      if (t === undefined) return yield* new CheckpointError({ path: file, tensor: name, message: `tensor is missing from its shard (${INDEX_FILE} names it there)` })
      out.set(name, { ...t, file })
    }
  }
  return out
})

/**
 * Reads `config.json` and every safetensors header of `dir` and checks every tensor's presence, dtype and
 * shape against the config, reading no weight.
 */
export const inspect = Effect.fnUntraced(function*(dir: string, options: LoadOptions = {}): Effect.fn.Return<Inspected, CheckpointError> {
  const configFile = path.join(dir, CONFIG_FILE)
  if (!(yield* exists(configFile))) return yield* new CheckpointError({ path: configFile, message: "config.json is missing" })
  const parsed = HfConfig.parse(yield* readJson(configFile, "config.json"), configFile)
  if (parsed instanceof CheckpointError) return yield* parsed
  let config = parsed.config
  if (options.maxSeqLen !== undefined) {
    if (!(Number.isInteger(options.maxSeqLen) && options.maxSeqLen > 0 && options.maxSeqLen <= config.maxSeqLen)) {
      return yield* new CheckpointError({ path: configFile, key: "max_position_embeddings", message: `a context of ${options.maxSeqLen} positions does not fit max_position_embeddings ${config.maxSeqLen}` })
    }
    config = { ...config, maxSeqLen: options.maxSeqLen }
  }
  const layout = yield* layoutOf(dir)
  const tensors: Array<TensorInfo & { file: string }> = []
  const expected = new Set<string>()
  for (const { name, shape } of Transformer.weightShapes(config)) {
    expected.add(name)
    const t = layout.get(name)
    if (t === undefined) {
      const file = (yield* exists(path.join(dir, WEIGHTS_FILE))) ? path.join(dir, WEIGHTS_FILE) : path.join(dir, INDEX_FILE)
      return yield* new CheckpointError({ path: file, tensor: name, message: `tensor is missing (${CONFIG_FILE} implies it)` })
    }
    if (t.dtype !== "F32" && t.dtype !== "F16" && t.dtype !== "BF16") {
      return yield* new CheckpointError({ path: t.file, tensor: name, message: `dtype ${t.dtype} is not a float type (F32, F16, BF16)` })
    }
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      return yield* new CheckpointError({ path: t.file, tensor: name, message: `shape [${t.shape}] does not match [${shape}] expected from ${CONFIG_FILE}` })
    }
    tensors.push(t)
  }
  for (const name of layout.keys()) {
    const ignorable = name.endsWith("rotary_emb.inv_freq") || (name === "lm_head.weight" && config.tieEmbeddings)
    if (!expected.has(name) && !ignorable) {
      return yield* new CheckpointError({ path: layout.get(name)!.file, tensor: name, message: `unexpected tensor (not part of this ${parsed.family} architecture)` })
    }
  }
  const dtype = torchOf[tensors[0].dtype as FloatDType]
  return { config, tensors, origin: { dir, family: parsed.family, dtype, hfConfig: parsed.raw } }
})

/** Loads a Hugging Face model directory (or an r1flow checkpoint) and says where it came from. */
export const loadHf = Effect.fnUntraced(function*(dir: string, options: LoadOptions = {}): Effect.fn.Return<Loaded, CheckpointError> {
  const { config, tensors, origin } = yield* inspect(dir, options)
  const arrays = new Map<string, Float32Array>()
  const files = [...new Set(tensors.map((t) => t.file))]
  for (const file of files) {
    yield* withReader(file, (reader) =>
      Effect.forEach(tensors.filter((t) => t.file === file), (t) => Effect.map(reader.floats(t.name), (data) => void arrays.set(t.name, data)), { discard: true }))
  }
  const model = yield* Effect.try({
    try: () => Transformer.fromArrays(config, arrays, options.trainable ?? true),
    catch: (e) => new CheckpointError({ path: dir, message: message(e) })
  })
  return { model, origin }
})

/** Loads a checkpoint directory into a new (trainable) model. */
export const load = (dir: string): Effect.Effect<Transformer.Model, CheckpointError> => Effect.map(loadHf(dir), (l) => l.model)

/** Our config as HF `config.json` content (float32; the family its options imply). */
export const toHfConfig = (c: Transformer.Config): Record<string, unknown> => HfConfig.toJson(c, HfConfig.familyFor(c), "float32")

/** The weights of `model` as tensors to write in `dtype`, each made (read, transposed, narrowed) when written. */
const sources = (model: Transformer.Model, dtype: FloatDType): Array<TensorSource> => {
  const shapes = new Map(Transformer.weightShapes(model.config).map((w) => [w.name, w.shape]))
  // A model with LoRA adapters is written merged (W + (α/r)·A·B), one tensor at a time: a model directory holds a plain model.
  return model.weights.map((w) => ({ name: w.name, dtype, shape: shapes.get(w.name)!, bytes: async () => narrow(await Lora.mergedArray(model, w), dtype) }))
}

/** Writes `model` to `dir` (created if needed): `model.safetensors` (float32) then `config.json`, each atomically. */
export const save = Effect.fnUntraced(function*(dir: string, model: Transformer.Model): Effect.fn.Return<void, CheckpointError> {
  yield* writeFile(path.join(dir, WEIGHTS_FILE), sources(model, "F32"), { format: "pt", producer: "r1flow" })
  yield* writeAtomic(path.join(dir, CONFIG_FILE), JSON.stringify(toHfConfig(model.config), null, 2) + "\n")
})

/** Options of `exportHf`. */
export interface ExportOptions {
  /** Stored dtype (default: the origin's, else float32); bf16/f16 round to nearest even. */
  readonly dtype?: TorchDtype
  /** Where the model came from (`loadHf`): its family, dtype and `config.json` keys are kept. */
  readonly origin?: Origin
  /** Split the weights into shards of at most this size: bytes, or "5GB" / "500MB" / "2GiB" (default "5GB"). */
  readonly maxShardSize?: number | string
  /** `generation_config.json` ids (default: those of the origin's generation / model config, if any). */
  readonly bosTokenId?: number
  readonly eosTokenId?: number | ReadonlyArray<number>
  readonly padTokenId?: number
  /** A directory whose tokenizer files (`TOKENIZER_FILES`) are copied (default: none). */
  readonly tokenizerDir?: string
}

/** What `exportHf` wrote. */
export interface Exported {
  readonly dir: string
  readonly family: HfConfig.Family
  readonly dtype: TorchDtype
  /** Weight files in order (one `model.safetensors`, or the shards). */
  readonly shards: ReadonlyArray<string>
  /** Bytes of tensor data (the index's `metadata.total_size`). */
  readonly totalSize: number
  /** Every file written, names relative to `dir`. */
  readonly files: ReadonlyArray<string>
}

/** transformers' `convert_file_size_to_int`: "5GB" = 5·10⁹, "5GiB" = 5·2³⁰, a number is bytes. */
export const parseSize = (size: number | string): number | undefined => {
  if (typeof size === "number") return Number.isFinite(size) && size > 0 ? size : undefined
  const m = /^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)?\s*$/i.exec(size)
  if (m === null) return undefined
  const units: Record<string, number> = { B: 1, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12, KIB: 2 ** 10, MIB: 2 ** 20, GIB: 2 ** 30, TIB: 2 ** 40 }
  const n = Math.floor(Number(m[1]) * units[(m[2] ?? "B").toUpperCase()])
  return n > 0 ? n : undefined
}

/** Groups tensors into shards as huggingface_hub does: in order, a new shard when the next would pass the limit. */
const shardsOf = (tensors: ReadonlyArray<TensorSource>, limit: number): Array<Array<TensorSource>> => {
  const out: Array<Array<TensorSource>> = []
  let current: Array<TensorSource> = [], size = 0
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1) * (t.dtype === "F32" ? 4 : 2)
    if (current.length > 0 && size + n > limit) {
      out.push(current)
      current = []
      size = 0
    }
    current.push(t)
    size += n
  }
  if (current.length > 0) out.push(current)
  return out
}

const isWeightFile = (name: string) => name === WEIGHTS_FILE || name === INDEX_FILE || /^model-\d{5}-of-\d{5}\.safetensors$/.test(name)

const copyAtomic = (from: string, to: string): Effect.Effect<void, CheckpointError> =>
  Effect.tryPromise({
    try: () => fs.readFile(from),
    catch: (e) => new CheckpointError({ path: from, message: `cannot read: ${message(e)}` })
  }).pipe(Effect.flatMap((bytes) => writeAtomic(to, bytes)))

/** `generation_config.json`: the origin's (if any), its token ids overridden by the options'. */
const generationConfig = Effect.fnUntraced(function*(options: ExportOptions): Effect.fn.Return<Record<string, unknown>, CheckpointError> {
  const o = options.origin
  const fromDir = o === undefined ? undefined : path.join(o.dir, GENERATION_CONFIG_FILE)
  const base = fromDir !== undefined && (yield* exists(fromDir)) ? yield* readJson(fromDir, GENERATION_CONFIG_FILE) : {}
  const out: Record<string, unknown> = typeof base === "object" && base !== null && !Array.isArray(base) ? { ...base } : {}
  for (const [key, value] of [["bos_token_id", options.bosTokenId], ["eos_token_id", options.eosTokenId], ["pad_token_id", options.padTokenId]] as const) {
    const fallback = o?.hfConfig[key]
    if (value !== undefined) out[key] = value
    else if (out[key] === undefined && fallback !== undefined && fallback !== null) out[key] = fallback
  }
  return out
})

/**
 * Writes `model` to `dir` as a Hugging Face model directory: weights (sharded with an index above
 * `maxShardSize`), `config.json`, `generation_config.json`, and the tokenizer files of `tokenizerDir`.
 * Weight files of an earlier export that the new one does not use are removed.
 */
export const exportHf = Effect.fnUntraced(function*(dir: string, model: Transformer.Model, options: ExportOptions = {}): Effect.fn.Return<Exported, CheckpointError> {
  const o = options.origin
  const family = o?.family ?? HfConfig.familyFor(model.config)
  const bad = HfConfig.mismatch(model.config, family)
  if (bad !== undefined) return yield* new CheckpointError({ path: path.join(dir, CONFIG_FILE), key: "model_type", message: `model_type ${family} cannot hold this model: ${bad}` })
  const dtype = options.dtype ?? o?.dtype ?? "float32"
  if (!(dtype in stored)) return yield* new CheckpointError({ path: dir, key: "torch_dtype", message: `dtype ${JSON.stringify(dtype)} is not one of float32, float16, bfloat16` })
  const limit = parseSize(options.maxShardSize ?? "5GB")
  if (limit === undefined) return yield* new CheckpointError({ path: dir, key: "max_shard_size", message: `max shard size ${JSON.stringify(options.maxShardSize)} is not a size (bytes, or e.g. "5GB", "2GiB")` })
  const tensors = sources(model, stored[dtype])
  const groups = shardsOf(tensors, limit)
  const names = groups.length === 1 ? [WEIGHTS_FILE] : groups.map((_, i) => `model-${String(i + 1).padStart(5, "0")}-of-${String(groups.length).padStart(5, "0")}.safetensors`)
  const weightMap: Record<string, string> = {}
  let totalSize = 0
  for (let i = 0; i < groups.length; i++) {
    yield* writeFile(path.join(dir, names[i]), groups[i], { format: "pt" })
    for (const t of groups[i]) {
      weightMap[t.name] = names[i]
      totalSize += t.shape.reduce((a, b) => a * b, 1) * (stored[dtype] === "F32" ? 4 : 2)
    }
  }
  const files = [...names]
  if (groups.length > 1) {
    yield* writeAtomic(path.join(dir, INDEX_FILE), JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2) + "\n")
    files.push(INDEX_FILE)
  }
  const present = yield* Effect.promise(() => fs.readdir(dir))
  for (const stale of present.filter((f) => isWeightFile(f) && !files.includes(f))) {
    yield* Effect.tryPromise({ try: () => fs.rm(path.join(dir, stale)), catch: (e) => new CheckpointError({ path: path.join(dir, stale), message: `cannot remove a stale weight file: ${message(e)}` }) })
  }
  yield* writeAtomic(path.join(dir, CONFIG_FILE), JSON.stringify(HfConfig.toJson(model.config, family, dtype, o?.hfConfig), null, 2) + "\n")
  yield* writeAtomic(path.join(dir, GENERATION_CONFIG_FILE), JSON.stringify(yield* generationConfig(options), null, 2) + "\n")
  files.push(CONFIG_FILE, GENERATION_CONFIG_FILE)
  if (options.tokenizerDir !== undefined) {
    const from = options.tokenizerDir
    const found: Array<string> = []
    for (const f of TOKENIZER_FILES) if (yield* exists(path.join(from, f))) found.push(f)
    if (!found.includes("tokenizer.json") && !found.includes("tokenizer.model")) {
      return yield* new CheckpointError({ path: from, message: "no tokenizer.json or tokenizer.model to copy" })
    }
    for (const f of found) if (path.resolve(from, f) !== path.resolve(dir, f)) yield* copyAtomic(path.join(from, f), path.join(dir, f))
    files.push(...found)
  }
  return { dir, family, dtype, shards: names, totalSize, files }
})
