/**
 * The real-size shapes of `llm-bench` and what a run of each needs, computed without building a model.
 *
 * Parameters (tied head, GQA with kv = Hkv·hd, hd = C / H, biases on q/k/v where `attentionBias`):
 *
 *   N = V·C + L·(2·C·C + 2·C·kv + 3·C·F + 2·C + [C + 2·kv]) + C            (+ V·C when the head is untied)
 *   LoRA adapters of rank r on targets T:  A = L · Σ_{t∈T} r·(in_t + out_t)
 *
 * Bytes (float32; `Backend.estimate`'s rule): full GRPO keeps policy, reference, gradient and two AdamW moments,
 * 20·N; LoRA keeps the frozen base plus the adapters (which are also the reference's: the base view) and 12
 * bytes per adapter parameter, 4·(N + A) + 12·A. On top of that, activations of the larger phase:
 *
 *   train  4·B·T·L·(10·C + 4·kv + 5·F + 2·H·T) + head      what the backward keeps per layer (rough, generous)
 *          head = 3·4·B·T·V below the 64 MiB chunking rule of `LogProbs.tokenLogProbs`, else 3·64 MiB
 *   decode 2·4·L·B·S·kv + 4·4·B·V                          the key/value cache of S = prompt + new tokens
 *
 * plus 4·N transient while the weights are initialised (the Float32Arrays a model is built from) and
 * `RUNTIME_BYTES` for Node, the backend and BLAS. A run fits when that total is at most `FIT_FRACTION` of the
 * machine's memory (the rest is the OS and the page cache). Measured at smollm2-135m (peak RSS, shared machine):
 * full on cpu 4.5 GiB against 4.6 estimated; LoRA 4.0 GiB on cpu and 3.9 GiB on wasm (heap grown to 3.8 GiB)
 * against 2.7 estimated: the LoRA estimate is low (garbage typed arrays the GC has not yet taken count in RSS),
 * so a LoRA run near the limit should be watched.
 *
 * Model FLOPs per token (nanoGPT / PaLM): forward 2·M + 4·L·H·hd·S, M the matmul parameters incl. the head,
 * S the attended length (T for a training row, the mean cache length when decoding). A GRPO step is a
 * reference forward plus a policy forward and backward: full 1 + 3 = 4 forwards; LoRA 1 + 1 + 1 = 3 (the
 * backward still propagates through every layer, but the frozen weights get no weight gradient).
 */
import { Backend } from "@r1flow/backend"
import { Lora, Transformer } from "@r1flow/model"

/** The shapes of the issue, by name (random weights; maxSeqLen only as long as the bench's rows need). */
export const SHAPES = {
  "smollm2-135m": { vocabSize: 49152, dModel: 576, nLayers: 30, nHeads: 9, nKvHeads: 3, dFf: 1536, ropeTheta: 100000, normEps: 1e-5, tieEmbeddings: true },
  "qwen2.5-0.5b": { vocabSize: 151936, dModel: 896, nLayers: 24, nHeads: 14, nKvHeads: 2, dFf: 4864, ropeTheta: 1e6, normEps: 1e-6, tieEmbeddings: true, attentionBias: true },
  "qwen2.5-1.5b": { vocabSize: 151936, dModel: 1536, nLayers: 28, nHeads: 12, nKvHeads: 2, dFf: 8960, ropeTheta: 1e6, normEps: 1e-6, tieEmbeddings: true, attentionBias: true }
} as const satisfies Record<string, Omit<Transformer.Config, "maxSeqLen">>

/** A shape's name. */
export type ShapeName = keyof typeof SHAPES

/** Training or adapter fine-tuning. */
export type Mode = "full" | "lora"

/** The bench's sequence lengths and batches. */
export interface Lengths {
  /** Training rows: prompt + completion tokens, `trainBatch` rows. */
  readonly trainPrompt: number
  readonly trainCompletion: number
  readonly trainBatch: number
  /** Generation: `genBatch` prompts of `genPrompt` tokens, `genNew` new tokens each. */
  readonly genPrompt: number
  readonly genNew: number
  readonly genBatch: number
}

/** The lengths: train 4 rows of 64 + 64; generate 32 rows of 32 + 128. */
export const LENGTHS: Lengths = { trainPrompt: 64, trainCompletion: 64, trainBatch: 4, genPrompt: 32, genNew: 128, genBatch: 32 }

/** LoRA of the issue: rank 16, α 32, every Linear of every block. */
export const LORA = { rank: 16, alpha: 32, targets: ["q", "k", "v", "o", "gate", "up", "down"] } as const satisfies {
  readonly rank: number
  readonly alpha: number
  readonly targets: ReadonlyArray<Transformer.Target>
}

/** Bytes of the process beyond its tensors and init arrays: Node, the backend's code, BLAS buffers. */
export const RUNTIME_BYTES = 512 * 2 ** 20

/** A run is said to fit when its estimate is at most this share of physical memory. */
export const FIT_FRACTION = 0.85

/** The shape `name` as a model config whose context holds both the training rows and the generations. */
export const config = (name: ShapeName, lengths: Lengths = LENGTHS): Transformer.Config => ({
  ...SHAPES[name],
  maxSeqLen: Math.max(lengths.trainPrompt + lengths.trainCompletion, lengths.genPrompt + lengths.genNew)
})

/** The `shape` name, or a RangeError listing the known ones. */
export const shapeName = (name: string): ShapeName => {
  if (!(name in SHAPES)) throw new RangeError(`unknown shape "${name}"; known: ${Object.keys(SHAPES).join(", ")}`)
  return name as ShapeName
}

const dims = (c: Transformer.Config) => {
  const hd = c.headDim ?? c.dModel / c.nHeads
  return { hd, qd: c.nHeads * hd, kv: c.nKvHeads * hd }
}

/** Parameters N of a model of `c` (the model's own count from its weight shapes). */
export const parameterCount = (c: Transformer.Config): number => Transformer.parametersOf(c)

/** Adapter parameters A of rank `rank` on `targets` of every block (LoRA's own count). */
export const adapterCount = (c: Transformer.Config, rank: number, targets: ReadonlyArray<Transformer.Target>): number =>
  Lora.parametersOf(c, { rank, targets })

/** Matmul parameters M (every Linear plus the output head; no norms, biases or embedding lookup). */
export const matmulParameters = (c: Transformer.Config): number => {
  const { qd, kv } = dims(c)
  const C = c.dModel
  return c.nLayers * (C * qd * 2 + C * kv * 2 + 3 * C * c.dFf) + c.vocabSize * C
}

/** Model FLOPs per token of a forward pass attending over `s` positions. */
export const forwardFlops = (c: Transformer.Config, s: number): number => 2 * matmulParameters(c) + 4 * c.nLayers * dims(c).qd * s

/** Model FLOPs per row token of one GRPO step: 4 forwards when fully trained, 3 under LoRA (module doc). */
export const trainFlops = (c: Transformer.Config, mode: Mode, lengths: Lengths = LENGTHS): number =>
  (mode === "full" ? 4 : 3) * forwardFlops(c, lengths.trainPrompt + lengths.trainCompletion)

/** Model FLOPs per generated token (attending over the mean cache length). */
export const generateFlops = (c: Transformer.Config, lengths: Lengths = LENGTHS): number =>
  forwardFlops(c, lengths.genPrompt + lengths.genNew / 2)

/** Bytes of float32 log-probs above which `LogProbs.tokenLogProbs` chunks the head. */
const HEAD_BUDGET = 64 * 2 ** 20

/** Bytes of the training step's activations (module doc; rough). */
export const trainActivationBytes = (c: Transformer.Config, lengths: Lengths = LENGTHS): number => {
  const { kv } = dims(c)
  const T = lengths.trainPrompt + lengths.trainCompletion, B = lengths.trainBatch
  const perLayer = 10 * c.dModel + 4 * kv + 5 * c.dFf + 2 * c.nHeads * T
  const logits = 4 * B * (T - 1) * c.vocabSize
  return 4 * B * T * c.nLayers * perLayer + 3 * Math.min(logits, HEAD_BUDGET)
}

/** Bytes of generation's key/value cache and per-step logits. */
export const decodeBytes = (c: Transformer.Config, lengths: Lengths = LENGTHS): number => {
  const S = lengths.genPrompt + lengths.genNew, B = lengths.genBatch
  return 2 * 4 * c.nLayers * B * S * dims(c).kv + 4 * 4 * B * c.vocabSize
}

/** What one shape × mode needs. */
export interface Plan {
  readonly shape: ShapeName
  readonly mode: Mode
  readonly config: Transformer.Config
  /** N, and the parameters that get gradients (N, or A under LoRA). */
  readonly parameters: number
  readonly trainable: number
  /** Weights, gradients and moments: 20·N, or 4·(N + A) + 12·A. */
  readonly stateBytes: number
  /** The larger of the two phases' activations. */
  readonly activationBytes: number
  /** stateBytes + activationBytes: what the backend holds (`Backend.choose` reads it). */
  readonly tensorBytes: number
  /** 4·N while the weights are built. */
  readonly initBytes: number
  /** tensorBytes + initBytes + RUNTIME_BYTES: what the process may peak at. */
  readonly totalBytes: number
}

/** The plan of `shape` × `mode` (the module doc's formulas). */
export const plan = (shape: ShapeName, mode: Mode, lengths: Lengths = LENGTHS): Plan => {
  const c = config(shape, lengths)
  const n = parameterCount(c)
  const a = mode === "lora" ? adapterCount(c, LORA.rank, LORA.targets) : 0
  const parameters = n + a, trainable = mode === "lora" ? a : n
  // The full mode's frozen reference is a second copy of the base; LoRA's is the base view of the same weights.
  const stateBytes = Backend.estimate({ parameters, trainable, reference: mode === "full" ? n : 0 })
  const activationBytes = Math.max(trainActivationBytes(c, lengths), decodeBytes(c, lengths))
  const tensorBytes = stateBytes + activationBytes, initBytes = 4 * n
  return { shape, mode, config: c, parameters, trainable, stateBytes, activationBytes, tensorBytes, initBytes, totalBytes: tensorBytes + initBytes + RUNTIME_BYTES }
}

/** Whether `totalBytes` fits a machine of `memoryBytes`, and the line that says so. */
export const fit = (totalBytes: number, memoryBytes: number): { readonly fits: boolean; readonly reason: string } => {
  if (!(totalBytes >= 0 && memoryBytes > 0)) throw new RangeError(`LlmPlan.fit: bytes must be ≥ 0 and memory > 0, got ${totalBytes} and ${memoryBytes}`)
  const limit = FIT_FRACTION * memoryBytes
  return totalBytes <= limit
    ? { fits: true, reason: `fits: needs ~${gib(totalBytes)} of the ${gib(limit)} usable (${FIT_FRACTION * 100}% of ${gib(memoryBytes)})` }
    : { fits: false, reason: `does not fit: needs ~${gib(totalBytes)}, machine has ${gib(memoryBytes)} (${gib(limit)} usable)` }
}

/** Bytes as GiB, two decimals below 1 GiB. */
export const gib = (bytes: number): string => `${(bytes / 2 ** 30).toFixed(bytes < 2 ** 30 ? 2 : 1)} GiB`
