/**
 * Batched sampling with a key/value cache: one prefill over all prompts (left-padded, so every prompt's
 * last token is in the same slot), then one token per step for the whole batch. The G completions of a
 * prompt share its prefill's keys/values (one copy, attended prompt by prompt); each row caches only
 * its own generated tokens.
 *
 * Sampling: temperature (0 = greedy), then top-k, then top-p (nucleus) on the tempered distribution.
 * Recorded log-prob: log π_τ(token | context) = log softmax(logits / τ)[token] at the sampling temperature
 * τ, UNFILTERED: the distribution the trainer scores (`LogProbs.tokenLogProbs` with `temperature` τ), so
 * GRPO's on-policy ratio π_θ / π_old is 1 at any τ. Top-k/top-p truncation is deliberately not in it (the
 * trainer does not model it either, as in TRL and verl). Greedy (τ = 0) records the untempered log-prob.
 * At τ = 1 this is log softmax of the raw logits, computed exactly as before temperatures were recorded.
 *
 * A row finishes with `stop` when it samples a stop id (the stop token is kept as the last completion
 * token, with its log-prob, so the policy is trained to stop), or `length` after `maxNewTokens` tokens
 * or when its sequence reaches the model's `maxSeqLen`. Finished rows are dropped from the batch (the
 * cache is compacted) once enough of them have finished. Each sampling draw takes one number from `rng`
 * in row order, so a seed reproduces a run exactly.
 */
import * as tf from "@tensorflow/tfjs"
import { Read } from "@r1flow/backend"
import type { Rng } from "@r1flow/core"
import * as DeviceSample from "./DeviceSample.js"
import * as Transformer from "./Transformer.js"

/** Why a completion ended. */
export type FinishReason = "stop" | "length"

/** What to sample. */
export interface Options {
  /** Prompt token ids (each at least one token). */
  readonly prompts: ReadonlyArray<Int32Array>
  /** Completions per prompt (G). */
  readonly groupSize: number
  readonly maxNewTokens: number
  /** 0 = greedy (argmax). */
  readonly temperature: number
  /** Keep only the k most likely tokens (0 or undefined = all). */
  readonly topK?: number
  /** Keep the smallest set of most likely tokens with total probability ≥ p (1 or undefined = all). */
  readonly topP?: number
  /** Token ids that end a completion (end of turn, end of text). */
  readonly stopIds: ReadonlyArray<number>
}

/** Sampled completions, prompt-major: rows `p·G … p·G + G − 1` belong to prompt p. */
export interface Result {
  readonly completions: Array<Int32Array>
  /** Per completion token: the model's log-prob at the sampling temperature, before top-k/top-p (see the module doc). */
  readonly logprobs: Array<Float32Array>
  readonly finishReasons: Array<FinishReason>
}

/** Scratch for `sampleToken` (one array reused across draws: it runs once per row and token). */
let weights = new Float64Array(0)

/** Draws a token from one row of logits; returns it and its log-prob under softmax(logits / τ) (untempered when greedy). */
export const sampleToken = (
  logits: Float32Array,
  options: { readonly temperature: number; readonly topK?: number; readonly topP?: number },
  rng: Rng.Stream
): { token: number; logprob: number } => {
  const V = logits.length
  let max = -Infinity, arg = 0
  for (let i = 0; i < V; i++) if (logits[i] > max) { max = logits[i]; arg = i }
  // e^(logit − max) once: the log-normaliser's terms, and at temperature 1 the sampling weights too.
  const e = weights.length >= V ? weights : (weights = new Float64Array(V))
  let sum = 0
  for (let i = 0; i < V; i++) sum += e[i] = Math.exp(logits[i] - max)
  const lse = max + Math.log(sum)
  if (options.temperature === 0) return { token: arg, logprob: logits[arg] - lse }
  const invT = 1 / options.temperature
  // Off τ = 1, e becomes e^((logit − max) / τ): the unfiltered sampling weights, and the tempered
  // normaliser of the recorded log-prob. At τ = 1 nothing is recomputed (the log-prob stays logit − lse).
  let tempered = sum
  if (invT !== 1) {
    tempered = 0
    for (let i = 0; i < V; i++) tempered += e[i] = Math.exp((logits[i] - max) * invT)
  }
  const logprobOf = (t: number) => (invT === 1 ? logits[t] - lse : (logits[t] - max) * invT - Math.log(tempered))
  const topK = options.topK !== undefined && options.topK > 0 && options.topK < V ? options.topK : V
  const topP = options.topP !== undefined && options.topP < 1 ? options.topP : 1
  let token: number
  if (topK === V && topP === 1) {
    const total = tempered
    const w = e
    let u = rng.nextFloat() * total
    token = V - 1
    for (let i = 0; i < V; i++) {
      u -= w[i]
      if (u < 0) { token = i; break }
    }
  } else {
    // Candidates by decreasing logit (ties: lower id first), cut by top-k, then by top-p.
    const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => logits[b] - logits[a] || a - b)
    const w = new Float64Array(topK)
    let total = 0
    for (let j = 0; j < topK; j++) total += w[j] = Math.exp((logits[order[j]] - max) * invT)
    let keep = topK
    if (topP < 1) {
      let cum = 0
      for (let j = 0; j < topK; j++) {
        cum += w[j]
        if (cum >= topP * total) { keep = j + 1; break }
      }
      total = 0
      for (let j = 0; j < keep; j++) total += w[j]
    }
    let u = rng.nextFloat() * total
    token = order[keep - 1]
    for (let j = 0; j < keep; j++) {
      u -= w[j]
      if (u < 0) { token = order[j]; break }
    }
  }
  return { token, logprob: logprobOf(token) }
}

/** `tf.tidy` for results that are plain objects of tensors (the cache) that tfjs's types do not accept. */
const tidy = <A>(f: () => A): A => tf.tidy(f as unknown as () => tf.TensorContainer) as unknown as A

const disposeCache = (cache: Transformer.Cache) => {
  for (const c of cache) {
    c.k.dispose()
    c.v.dispose()
  }
}

/** Rows `index` of every cache tensor (a new cache; the old one is disposed). */
const takeRows = (cache: Transformer.Cache, index: ReadonlyArray<number>): Transformer.Cache => {
  const next = tidy(() => {
    const idx = tf.tensor1d(Array.from(index), "int32")
    return cache.map((c) => ({ k: tf.gather(c.k, idx) as tf.Tensor4D, v: tf.gather(c.v, idx) as tf.Tensor4D, ...(c.length === undefined ? {} : { length: c.length }) }))
  })
  disposeCache(cache)
  return next
}

/** The device draw for the batch's rows: u from `rng` for each unfinished row in row order (none when greedy), as the host path takes them. */
const drawOnDevice = (logits: tf.Tensor2D, rows: ReadonlyArray<number>, done: Uint8Array, temperature: number, rng: Rng.Stream) => {
  const u = new Float64Array(rows.length)
  if (temperature > 0) for (let i = 0; i < rows.length; i++) if (!done[rows[i]]) u[i] = rng.nextFloat()
  return DeviceSample.draw(logits, u, temperature)
}

/** Bytes of a tied embedding up to which `sample` makes its transposed `[C, V]` copy (small models, unchanged). */
export const tiedHeadCopyBytes = 64 * 2 ** 20

/**
 * Samples `groupSize` completions for every prompt (see the module doc). Each step reads back only its
 * logits `[rows, V]`, asynchronously, so the same loop runs on WebGPU; the values are those of a synchronous read.
 */
export const sample = async (model: Transformer.Model, options: Options, rng: Rng.Stream): Promise<Result> => {
  const c = model.config
  const P = options.prompts.length, G = options.groupSize, N = P * G
  if (!Number.isInteger(G) || G < 1) throw new RangeError(`groupSize must be a positive integer, got ${G}`)
  if (!(options.temperature >= 0)) throw new RangeError(`temperature must be ≥ 0, got ${options.temperature}`)
  const stop = new Set(options.stopIds)
  const lengths = options.prompts.map((p) => p.length)
  for (const [i, len] of lengths.entries()) {
    if (len < 1) throw new RangeError(`prompt ${i} is empty`)
    if (len >= c.maxSeqLen) throw new RangeError(`prompt ${i} has ${len} tokens; maxSeqLen ${c.maxSeqLen} leaves no room to generate`)
  }
  const completions: Array<Array<number>> = Array.from({ length: N }, () => [])
  const logprobs: Array<Array<number>> = Array.from({ length: N }, () => [])
  const finish: Array<FinishReason> = Array.from({ length: N }, () => "length")
  if (N === 0 || options.maxNewTokens <= 0) {
    return { completions: completions.map(() => new Int32Array(0)), logprobs: logprobs.map(() => new Float32Array(0)), finishReasons: finish }
  }
  const limit = (r: number) => Math.min(options.maxNewTokens, c.maxSeqLen - lengths[Math.floor(r / G)])

  // Prefill: prompts left-padded to the longest; padded slots are masked out as keys.
  const S0 = Math.max(...lengths)
  const ids = new Int32Array(P * S0), positions = new Int32Array(P * S0), valid = new Uint8Array(P * S0)
  for (let p = 0; p < P; p++) {
    const pad = S0 - lengths[p]
    ids.set(options.prompts[p], p * S0 + pad)
    for (let s = pad; s < S0; s++) {
      positions[p * S0 + s] = s - pad
      valid[p * S0 + s] = 1
    }
  }
  // Tied heads are transposed once per call, not per step (and XNNPACK keeps the packed copy), while that copy
  // is small; a larger embedding (545 MB at Qwen2.5-0.5B) is read in place by `step` as Eᵀ, not copied.
  const head = model.lmHead === undefined && c.vocabSize * c.dModel * 4 <= tiedHeadCopyBytes ? Transformer.outputHead(model) : undefined
  const prefill = tidy(() => Transformer.step(model, tf.tensor2d(ids, [P, S0], "int32"), positions, valid, undefined, head))
  // The prompts' keys/values stay one copy per prompt, which its G rows attend to (`Transformer.Prompts`);
  // `cache` holds each row's own generated tokens only.
  const promptCache = prefill.cache
  let cache: Transformer.Cache | undefined
  // Cache row i belongs to output row rows[i] = p·G + g.
  let rows = Array.from({ length: N }, (_, r) => r)
  const V = c.vocabSize
  const done = new Uint8Array(N)
  let remaining = N
  // On a GPU the draw runs where the logits are and only [rows] tokens and log-probs come back (`DeviceSample`).
  const device = DeviceSample.serves(options, V)
  let onDevice: tf.Tensor2D | undefined
  try {
    let logits: Float32Array = new Float32Array(0)
    if (device) {
      onDevice = tidy(() => tf.gather(prefill.logits, tf.tensor1d(Array.from({ length: N }, (_, r) => Math.floor(r / G)), "int32")) as tf.Tensor2D) // [N, V]
      prefill.logits.dispose()
    } else {
      const firstLogits = await Read.floats(prefill.logits) // [P, V]
      logits = new Float32Array(N * V)
      for (let r = 0; r < N; r++) logits.set(firstLogits.subarray(Math.floor(r / G) * V, (Math.floor(r / G) + 1) * V), r * V)
    }
    for (let t = 0; ; t++) {
      const drawn = onDevice === undefined ? undefined : await drawOnDevice(onDevice, rows, done, options.temperature, rng)
      onDevice?.dispose()
      onDevice = undefined
      // Sample one token for every unfinished row (row order fixes the RNG draws).
      for (let i = 0; i < rows.length; i++) {
        const r = rows[i]
        if (done[r]) continue
        const { token, logprob } = drawn !== undefined ? { token: drawn.tokens[i], logprob: drawn.logprobs[i] } : sampleToken(logits.subarray(i * V, (i + 1) * V), options, rng)
        completions[r].push(token)
        logprobs[r].push(logprob)
        if (stop.has(token)) finish[r] = "stop"
        if (stop.has(token) || completions[r].length >= limit(r)) {
          done[r] = 1
          remaining--
        }
      }
      if (remaining === 0) break
      // Drop finished rows once enough have accumulated (a gather of the cache per compaction).
      const finished = rows.filter((r) => done[r]).length
      if (finished > 0 && finished >= Math.max(1, Math.ceil(rows.length / 8))) {
        const keep = rows.map((r, i) => (done[r] ? -1 : i)).filter((i) => i >= 0)
        if (cache !== undefined) cache = takeRows(cache, keep)
        rows = keep.map((i) => rows[i])
      }
      const B = rows.length
      const stepIds = new Int32Array(B), stepPos = new Int32Array(B)
      for (let i = 0; i < B; i++) {
        const r = rows[i], len = lengths[Math.floor(r / G)]
        stepIds[i] = completions[r][completions[r].length - 1]
        // A finished row still in the batch repeats its last token; clamp keeps its position in range.
        stepPos[i] = Math.min(len + t, c.maxSeqLen - 1)
      }
      const prompts: Transformer.Prompts = { cache: promptCache, perPrompt: G, rowOf: Int32Array.from(rows), valid }
      // With the native kernels the rows' own keys/values go into a cache sized for the whole completion,
      // written in place each step (no copy of the cache per token).
      if (cache === undefined) cache = Transformer.preallocate(model, B, Math.max(1, options.maxNewTokens))
      const own = cache
      const next = tidy(() => Transformer.step(model, tf.tensor2d(stepIds, [B, 1], "int32"), stepPos, new Uint8Array(B * (t + 1)).fill(1), own, head, prompts))
      if (cache !== undefined && cache[0].length === undefined) disposeCache(cache)
      cache = next.cache
      if (device) onDevice = next.logits as tf.Tensor2D
      else logits = await Read.floats(next.logits) // [B, V]
    }
  } finally {
    onDevice?.dispose()
    disposeCache(promptCache)
    if (cache !== undefined) disposeCache(cache)
    head?.dispose()
  }
  return {
    completions: completions.map((x) => Int32Array.from(x)),
    logprobs: logprobs.map((x) => Float32Array.from(x)),
    finishReasons: finish
  }
}
