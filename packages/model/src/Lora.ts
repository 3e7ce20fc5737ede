/**
 * LoRA (Hu et al., 2021): each adapted Linear keeps its weight W frozen and learns a low-rank update,
 *
 *   y = x · W + (α / r) · (x · A) · B          x [N, in], W [in, out], A [in, r], B [r, out]
 *
 * initialised as PEFT does, so training starts at the base model exactly: PEFT's `lora_A` `[r, in]` is
 * kaiming-uniform with a = √5, i.e. U(−1/√in, 1/√in), and `lora_B` is 0. Only A and B are trained (and
 * held in AdamW); the base model is the same variables with the adapters off, so GRPO's reference costs
 * no second copy of the weights.
 *
 *   attach      adapters on `targets` of every block; takes ownership of the base, frozen
 *   disabled    the base seen without its adapters (π_ref); bitwise the base, as no op is added
 *   mergedArray W + (α/r)·A·B of one weight in HF layout (what a merged export writes, one tensor at a time)
 *   savePeft    a PEFT adapter directory: `adapter_config.json` + `adapter_model.safetensors`
 *   loadPeft    attaches a PEFT adapter directory's adapters to a base model, every field checked first
 *
 * Departures from PEFT, stated: no dropout on the adapter input (`lora_dropout` 0: a rollout-scored
 * objective wants the deterministic forward), scale α/r only (no rsLoRA, no DoRA), every block adapted
 * (no `layers_to_transform`), no bias training. A PEFT directory asking for any of those is refused
 * with the key at fault rather than loaded with different maths.
 */
import * as tf from "@tensorflow/tfjs"
import { Read } from "@r1flow/backend"
import { Rng } from "@r1flow/core"
import { Effect, Schema } from "effect"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { CheckpointError, read, writeAtomic, writeFile } from "./Safetensors.js"
import * as Transformer from "./Transformer.js"

/** Every Linear of a block, in block order: "all linear layers". */
export const ALL_TARGETS = ["q", "k", "v", "o", "gate", "up", "down"] as const satisfies ReadonlyArray<Transformer.Target>

/** The Linear layers LoRA can adapt, by our name. */
export const Target = Schema.Literals(ALL_TARGETS)

/** LoRA's settings: rank r, α (scale α/r) and the adapted Linear layers of every block (all seven when left out). */
export const Config = Schema.Struct({
  rank: Schema.Int.check(Schema.isGreaterThan(0)),
  alpha: Schema.Finite.check(Schema.isGreaterThan(0)),
  targets: Schema.Array(Target).check(Schema.isMinLength(1), Schema.isUnique()).pipe(
    Schema.withDecodingDefaultKey(Effect.succeed(ALL_TARGETS))
  )
})
/** LoRA's settings. */
export type Config = typeof Config.Type

/** The HF module of each target (PEFT's `target_modules` names). */
export const moduleOf: Record<Transformer.Target, string> = {
  q: "self_attn.q_proj",
  k: "self_attn.k_proj",
  v: "self_attn.v_proj",
  o: "self_attn.o_proj",
  gate: "mlp.gate_proj",
  up: "mlp.up_proj",
  down: "mlp.down_proj"
}

export const CONFIG_FILE = "adapter_config.json"
export const WEIGHTS_FILE = "adapter_model.safetensors"

/** PEFT's tensor name of a block's adapter matrix (as `save_pretrained` writes it, adapter name dropped). */
export const peftName = (layer: number, target: Transformer.Target, matrix: "A" | "B"): string =>
  `base_model.model.model.layers.${layer}.${moduleOf[target]}.lora_${matrix}.weight`

/** Adapter parameters of `lora` on a model of `config`, without building it: r·(in + out) per adapted Linear, every block. */
export const parametersOf = (config: Transformer.Config, lora: Pick<Config, "rank" | "targets">): number => {
  const shapes = new Map(Transformer.weightShapes(config).map((w) => [w.name, w.shape]))
  let perBlock = 0
  for (const target of lora.targets) {
    const shape = shapes.get(baseName(0, target)) // [out, in]
    if (shape === undefined) throw new RangeError(`Lora.parametersOf: the model has no ${moduleOf[target]} for LoRA target ${target}`)
    perBlock += lora.rank * (shape[0] + shape[1])
  }
  return perBlock * config.nLayers
}

/** The HF weight name an adapter sits on. */
const baseName = (layer: number, target: Transformer.Target): string => `model.layers.${layer}.${moduleOf[target]}.weight`

/**
 * `base` with adapters on `config.targets` of every block, A drawn from `rng` (block by block, targets in
 * `ALL_TARGETS` order, row-major over PEFT's `[r, in]`), B zero. The result owns `base` (its `dispose`
 * frees both) and trains only the adapters; `base` must not be used on its own afterwards.
 */
export const attach = (base: Transformer.Model, config: Config, rng: Rng.Stream): Transformer.Model =>
  withAdapters(base, config, (layer, target, [inDim, outDim]) => {
    const bound = 1 / Math.sqrt(inDim)
    const a = new Float32Array(config.rank * inDim) // PEFT's [r, in], drawn in its order
    for (let i = 0; i < a.length; i++) a[i] = (2 * rng.nextFloat() - 1) * bound
    return { a, b: new Float32Array(outDim * config.rank) }
  })

/** Adapter values of one Linear in PEFT layout: A `[r, in]`, B `[out, r]`. */
interface PeftPair {
  readonly a: Float32Array
  readonly b: Float32Array
}

/** Builds the adapted model from per-Linear adapter values in PEFT layout. */
const withAdapters = (
  base: Transformer.Model,
  config: Config,
  values: (layer: number, target: Transformer.Target, shape: readonly [number, number]) => PeftPair
): Transformer.Model => {
  if (base.lora !== undefined) throw new RangeError("Lora.attach: the model already has adapters")
  for (const w of base.weights) if (w.variable.trainable) w.variable.trainable = false
  const weights: Array<Transformer.Weight> = []
  const targets = ALL_TARGETS.filter((t) => config.targets.includes(t))
  const scale = config.alpha / config.rank, r = config.rank
  const layers = base.layers.map((layer, l) => {
    const adapters: Partial<Record<Transformer.Target, Transformer.Adapter>> = {}
    for (const t of targets) {
      const [inDim, outDim] = layer[t].shape as [number, number]
      const v = values(l, t, [inDim, outDim])
      const a = tf.tidy(() => tf.variable(tf.tensor2d(Transformer.transpose2d(v.a, r, inDim), [inDim, r]), true)) // [in, r]
      const b = tf.tidy(() => tf.variable(tf.tensor2d(Transformer.transpose2d(v.b, outDim, r), [r, outDim]), true)) // [r, out]
      adapters[t] = { a, b, scale }
      weights.push({ name: peftName(l, t, "A"), variable: a }, { name: peftName(l, t, "B"), variable: b })
    }
    return { ...layer, adapters }
  })
  return {
    ...base,
    layers,
    lora: { rank: r, alpha: config.alpha, targets, weights },
    dispose: () => {
      for (const w of weights) w.variable.dispose()
      base.dispose()
    }
  }
}

/** The base model without its adapters (GRPO's reference): the same variables, nothing to free. */
export const disabled = (model: Transformer.Model): Transformer.Model => {
  const { lora: _, ...rest } = model
  return { ...rest, layers: model.layers.map(({ adapters: _a, ...layer }) => layer), dispose: () => {} }
}

/** Which block and target an HF weight name is, when it is an adapted Linear of `model`. */
const adapterOf = (model: Transformer.Model, name: string): Transformer.Adapter | undefined => {
  if (model.lora === undefined) return undefined
  const m = /^model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)_proj\.weight$/.exec(name)
  if (m === null) return undefined
  return model.layers[Number(m[1])]?.adapters?.[m[3] as Transformer.Target]
}

/** One weight as a merged export writes it, HF layout: W + (α/r)·A·B where `w` is adapted, else W. Read with `data()`. */
export const mergedArray = async (model: Transformer.Model, w: Transformer.Weight): Promise<Float32Array> => {
  const ad = adapterOf(model, w.name)
  if (ad === undefined) return Transformer.toArray(w)
  const merged = tf.tidy(() => tf.add(w.variable, tf.mul(tf.matMul(ad.a, ad.b), ad.scale))) // [in, out]
  const [inDim, outDim] = merged.shape as [number, number]
  return Transformer.transpose2d(await Read.floats(merged), inDim, outDim) // HF [out, in]
}

/** Every weight of `model` merged (`mergedArray`), by HF name, one weight read at a time. */
export const mergedArrays = async (model: Transformer.Model): Promise<Map<string, Float32Array>> => {
  const out = new Map<string, Float32Array>()
  for (const w of model.weights) out.set(w.name, await mergedArray(model, w))
  return out
}

/** A plain model (no adapters, its own variables) equal to `model` with its adapters merged in. */
export const merge = async (model: Transformer.Model, options: { readonly trainable?: boolean } = {}): Promise<Transformer.Model> =>
  Transformer.fromArrays(model.config, await mergedArrays(model), options.trainable ?? false)

// ---------------------------------------------------------------------------------------------------
// PEFT adapter directories.

/** `adapter_config.json` as PEFT writes it for our settings. */
const peftConfig = (lora: Transformer.LoraState, baseModel: string | undefined): Record<string, unknown> => ({
  peft_type: "LORA",
  task_type: "CAUSAL_LM",
  base_model_name_or_path: baseModel ?? null,
  r: lora.rank,
  lora_alpha: lora.alpha,
  target_modules: lora.targets.map((t) => moduleOf[t].split(".")[1]),
  lora_dropout: 0,
  bias: "none",
  fan_in_fan_out: false,
  use_rslora: false,
  use_dora: false,
  init_lora_weights: true,
  inference_mode: true,
  modules_to_save: null,
  layers_to_transform: null,
  rank_pattern: {},
  alpha_pattern: {}
})

/**
 * Writes `model`'s adapters to `dir` as a PEFT adapter directory (loadable by `PeftModel.from_pretrained`
 * on the base): the safetensors first, then the config, each atomically. `baseModel` names the base.
 */
export const savePeft = Effect.fnUntraced(function*(dir: string, model: Transformer.Model, options: { readonly baseModel?: string } = {}): Effect.fn.Return<void, CheckpointError> {
  const lora = model.lora
  if (lora === undefined) return yield* new CheckpointError({ path: dir, message: "the model has no LoRA adapters to save" })
  const sources = lora.weights.map((w) => {
    const [rows, cols] = w.variable.shape as [number, number]
    return { name: w.name, dtype: "F32" as const, shape: [cols, rows], bytes: async () => new Uint8Array(Transformer.transpose2d((await w.variable.data()) as Float32Array, rows, cols).buffer) }
  })
  yield* writeFile(path.join(dir, WEIGHTS_FILE), sources, { format: "pt", producer: "r1flow" })
  yield* writeAtomic(path.join(dir, CONFIG_FILE), JSON.stringify(peftConfig(lora, options.baseModel), null, 2) + "\n")
})

const PEFT_NAMES: Record<string, Transformer.Target> = Object.fromEntries(
  ALL_TARGETS.map((t) => [moduleOf[t].split(".")[1], t])
)

/** What must hold for a PEFT key to mean our maths: its value, or a predicate, and why. */
const refusals: ReadonlyArray<readonly [string, (v: unknown) => boolean, string]> = [
  ["peft_type", (v) => v === "LORA", `must be "LORA"`],
  ["use_rslora", (v) => v === undefined || v === false, "rsLoRA (scale α/√r) is not supported"],
  ["use_dora", (v) => v === undefined || v === false, "DoRA is not supported"],
  ["bias", (v) => v === undefined || v === "none", `only "none" is supported (no trained biases)`],
  ["fan_in_fan_out", (v) => v === undefined || v === false, "Conv1D-style (fan_in_fan_out) weights are not supported"],
  ["modules_to_save", (v) => v === undefined || v === null || (Array.isArray(v) && v.length === 0), "fully trained extra modules are not supported"],
  ["layers_to_transform", (v) => v === undefined || v === null, "adapting only some layers is not supported"],
  ["rank_pattern", (v) => v === undefined || (typeof v === "object" && v !== null && Object.keys(v).length === 0), "per-module ranks are not supported"],
  ["alpha_pattern", (v) => v === undefined || (typeof v === "object" && v !== null && Object.keys(v).length === 0), "per-module alphas are not supported"]
]

/** The settings of a PEFT `adapter_config.json` object, or the key at fault. */
export const parsePeftConfig = (raw: unknown, file: string): Config | CheckpointError => {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return new CheckpointError({ path: file, message: "must be a JSON object" })
  const o = raw as Record<string, unknown>
  for (const [key, ok, why] of refusals) if (!ok(o[key])) return new CheckpointError({ path: file, key, message: `${JSON.stringify(o[key])}: ${why}` })
  const modules = o.target_modules
  if (!Array.isArray(modules) || modules.length === 0 || !modules.every((m) => typeof m === "string")) {
    return new CheckpointError({ path: file, key: "target_modules", message: "must be a non-empty list of module names (a regex string is not supported)" })
  }
  const unknown = modules.filter((m) => !(m in PEFT_NAMES))
  if (unknown.length > 0) return new CheckpointError({ path: file, key: "target_modules", message: `unknown modules ${unknown.join(", ")}; expected among ${Object.keys(PEFT_NAMES).join(", ")}` })
  const decoded = Schema.decodeUnknownResult(Config)({ rank: o.r, alpha: o.lora_alpha, targets: modules.map((m) => PEFT_NAMES[m as string]) })
  if (decoded._tag === "Failure") {
    return new CheckpointError({ path: file, key: "r", message: `r must be a positive integer, lora_alpha a positive number and target_modules distinct (got r ${JSON.stringify(o.r)}, lora_alpha ${JSON.stringify(o.lora_alpha)})` })
  }
  return decoded.success
}

/**
 * Attaches the adapters of the PEFT directory `dir` to `base` (as `attach` does, taking ownership of it).
 * Every tensor is checked before anything is attached: each expected `lora_A` `[r, in]` / `lora_B`
 * `[out, r]` present with its shape, and no tensor the settings do not explain. F16 / BF16 are widened.
 */
export const loadPeft = Effect.fnUntraced(function*(dir: string, base: Transformer.Model): Effect.fn.Return<Transformer.Model, CheckpointError> {
  const configFile = path.join(dir, CONFIG_FILE), weightsFile = path.join(dir, WEIGHTS_FILE)
  const text = yield* Effect.tryPromise({ try: () => fs.readFile(configFile, "utf8"), catch: (e) => new CheckpointError({ path: configFile, message: `cannot read: ${e instanceof Error ? e.message : String(e)}` }) })
  const raw = yield* Effect.try({ try: () => JSON.parse(text) as unknown, catch: (e) => new CheckpointError({ path: configFile, message: `not JSON: ${e instanceof Error ? e.message : String(e)}` }) })
  const config = parsePeftConfig(raw, configFile)
  if (config instanceof CheckpointError) return yield* config
  const { tensors } = yield* read(weightsFile)
  const expected = new Set<string>()
  for (let l = 0; l < base.layers.length; l++) {
    for (const t of config.targets) {
      const [inDim, outDim] = base.layers[l][t].shape as [number, number]
      for (const [m, shape] of [["A", [config.rank, inDim]], ["B", [outDim, config.rank]]] as const) {
        const name = peftName(l, t, m), e = tensors[name]
        expected.add(name)
        if (e === undefined) return yield* new CheckpointError({ path: weightsFile, tensor: name, message: `missing (adapter_config.json adapts ${baseName(l, t)})` })
        if (!(e.data instanceof Float32Array)) return yield* new CheckpointError({ path: weightsFile, tensor: name, message: `dtype ${e.dtype} is not a float type` })
        if (!tf.util.arraysEqual([...e.shape], [...shape])) return yield* new CheckpointError({ path: weightsFile, tensor: name, message: `shape [${e.shape}], the base model needs [${shape}]` })
      }
    }
  }
  const extra = Object.keys(tensors).filter((n) => !expected.has(n))
  if (extra.length > 0) return yield* new CheckpointError({ path: weightsFile, tensor: extra[0], message: `not an adapter of this base and these settings (${extra.length} such tensors)` })
  return withAdapters(base, config, (l, t) => ({ a: tensors[peftName(l, t, "A")].data as Float32Array, b: tensors[peftName(l, t, "B")].data as Float32Array }))
})
