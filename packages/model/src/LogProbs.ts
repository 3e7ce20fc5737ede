/**
 * Per-token log-probabilities and entropies of sequences under a policy, and the padded batch GRPO
 * trains on, built from a rollouts batch.
 *
 *   logprobs[b, t] = log π_τ(ids[b, t+1] | ids[b, ≤t])      π_τ = softmax(logits / τ), τ = 1 by default
 *   entropy[b, t]  = −Σ_v π_τ(v | ids[b, ≤t]) log π_τ(v | ids[b, ≤t])
 *
 * Positions that are prompt or padding are not masked here: the mask from `completionBatch` selects
 * the completion tokens, and the loss multiplies by it.
 */
import * as tf from "@tensorflow/tfjs"
import { Columns } from "@r1flow/core"
import { Registry } from "@r1flow/kernels"
import type { RecordBatch } from "apache-arrow"
import * as Head from "./Head.js"
import * as Transformer from "./Transformer.js"

/** Options of `tokenLogProbs`. */
export interface Options {
  /** τ: log-probs of softmax(logits / τ), the sampler's distribution at that temperature. Default 1. */
  readonly temperature?: number
  /**
   * P: every row's first P tokens are the same (`commonPrefixLength`), so they run once as a batch of one
   * (`Transformer.forwardShared`). Same results as without it, up to float rounding. Default 0.
   */
  readonly sharedPrefix?: number
  /**
   * Chunking of the fused head (`Head.logProbs`): used when the full log-probs `[B, T−1, V]` would exceed
   * `fullBudgetBytes`, or always when `chunk` is given (tests force it on small shapes).
   */
  readonly chunk?: Head.Options
  /** Bytes of float32 `[B, T−1, V]` up to which the unchunked path runs. Default 64 MiB. */
  readonly fullBudgetBytes?: number
  /**
   * Activation checkpointing (`Transformer.ForwardOptions.checkpoint`): each block keeps only its input and
   * runs again in the backward, trading a second forward for the blocks' activations. Same values and
   * gradients. Only worth it under a gradient; default false.
   */
  readonly checkpoint?: boolean
}

/** Default `fullBudgetBytes`: the demo's and small models' log-probs stay on the unchunked path, bit for bit. */
export const defaultFullBudgetBytes = 64 * 2 ** 20

/**
 * `logprobs` and `entropy`, both `[B, T−1]`, of `ids` `[B, T]` (int32). Differentiable.
 * Only the first T−1 positions are run through the model (the last one predicts nothing we score).
 * With `sharedPrefix` P (capped at T−1), positions 0…P−1 run once for all rows: their entropies and the
 * log-probs of targets 1…P−1 are the same in every row, and the last prefix position's distribution scores
 * each row's own token P.
 * Rule: while B·(T−1)·V·4 bytes ≤ `fullBudgetBytes` (64 MiB) the logits are built whole and go through
 * logSoftmax, gather and entropy exactly as before; above it (or with `chunk`), the final hidden states go
 * through `Head.logProbs`, chunked over rows and vocabulary, so `[B, T−1, V]` never exists.
 */
export const tokenLogProbs = (model: Transformer.Model, ids: tf.Tensor2D, options: Options = {}): { logprobs: tf.Tensor2D; entropy: tf.Tensor2D } =>
  tf.tidy(() => {
    const [batch, time] = ids.shape
    if (time < 2) throw new RangeError(`tokenLogProbs needs at least 2 tokens per row, got ${time}`)
    const tau = options.temperature ?? 1
    if (!(tau > 0)) throw new RangeError(`tokenLogProbs: temperature must be positive, got ${tau}`)
    const shared = options.sharedPrefix ?? 0
    if (!Number.isInteger(shared) || shared < 0 || shared > time) throw new RangeError(`tokenLogProbs: sharedPrefix must be an integer in 0…${time}, got ${shared}`)
    const V = model.config.vocabSize
    const logSoftmax = (logits: tf.Tensor) => tf.logSoftmax(tau === 1 ? logits : tf.div(logits, tau))
    const entropyOf = (logp: tf.Tensor) => tf.neg(tf.sum(tf.mul(tf.exp(logp), logp), -1))
    // log p(target) at each position. With a segment-sum kernel (gather's gradient) it is a gather from the
    // flattened log-probs; else a one-hot product (stock wasm). Both give exactly logp[target] and its gradient.
    const gathered = Registry.has("UnsortedSegmentSum")
    const score = (logp: tf.Tensor, targets: tf.Tensor) => {
      if (!gathered) return tf.sum(tf.mul(logp, Transformer.oneHotF32(targets, V)), -1)
      const n = targets.size
      const index = tf.add(tf.mul(tf.range(0, n, 1, "int32"), tf.scalar(V, "int32")), tf.reshape(targets, [n])) // [n]: row·V + target
      return tf.reshape(tf.gather(tf.reshape(logp, [n * V]), index), targets.shape)
    }
    const P = Math.min(shared, time - 1)
    const fwd: Transformer.ForwardOptions = options.checkpoint === true ? { checkpoint: true } : {}
    if (options.chunk !== undefined || batch * (time - 1) * V * 4 > (options.fullBudgetBytes ?? defaultFullBudgetBytes)) {
      return chunked(model, ids, P, { ...options.chunk, temperature: tau }, fwd)
    }
    if (P === 0 || batch === 1) {
      const logp = logSoftmax(Transformer.forward(model, tf.slice(ids, [0, 0], [batch, time - 1]), fwd)) // [B, T−1, V]
      return { logprobs: score(logp, tf.slice(ids, [0, 1], [batch, time - 1])) as tf.Tensor2D, entropy: entropyOf(logp) as tf.Tensor2D }
    }
    checkShared(ids, P)
    const S = time - 1 - P // suffix inputs: positions P…T−2
    const prefixIds = tf.slice(ids, [0, 0], [1, P])
    const out = S > 0
      ? Transformer.forwardShared(model, prefixIds, tf.slice(ids, [0, P], [batch, S]), fwd)
      : { prefix: Transformer.forward(model, prefixIds, fwd), suffix: undefined }
    const rows = tf.zeros([batch, 1]) // broadcasting one row to B (its gradient is a sum, unlike tile's)
    const logpP = logSoftmax(out.prefix) // [1, P, V]
    const logprobs: Array<tf.Tensor> = []
    const entropy: Array<tf.Tensor> = [tf.add(tf.reshape(entropyOf(logpP), [1, P]), rows)]
    if (P > 1) logprobs.push(tf.add(tf.reshape(score(tf.slice(logpP, [0, 0, 0], [1, P - 1, V]), tf.slice(ids, [0, 1], [1, P - 1])), [1, P - 1]), rows))
    // The last prefix position scores each row's token P: [B, V] one-hot · [V, 1].
    const lastP = tf.reshape(tf.slice(logpP, [0, P - 1, 0], [1, 1, V]), [V, 1]) as tf.Tensor2D
    logprobs.push(tf.matMul(Transformer.oneHotF32(tf.reshape(tf.slice(ids, [0, P], [batch, 1]), [batch]), V) as tf.Tensor2D, lastP))
    if (out.suffix !== undefined) {
      const logpS = logSoftmax(out.suffix) // [B, S, V]
      logprobs.push(score(logpS, tf.slice(ids, [0, P + 1], [batch, S])))
      entropy.push(entropyOf(logpS))
    }
    return { logprobs: tf.concat(logprobs, 1) as tf.Tensor2D, entropy: tf.concat(entropy, 1) as tf.Tensor2D }
  })

/**
 * Every row of `ids` `[B, T]` begins with row 0's first P tokens, else an error naming the row and position.
 * Not checked on webgpu: there a GPU tensor has only async reads and this runs inside the (synchronous)
 * gradient forward. The trainers derive P from the host ids (`commonPrefixLength`), so only a caller's own P is unchecked there.
 */
const checkShared = (ids: tf.Tensor2D, P: number): void => {
  if (tf.getBackend() === "webgpu") return
  const [batch, time] = ids.shape
  const all = ids.dataSync()
  for (let b = 1; b < batch; b++) {
    for (let t = 0; t < P; t++) {
      if (all[b * time + t] !== all[t]) throw new RangeError(`tokenLogProbs: sharedPrefix is ${P}, but row ${b} differs from row 0 at position ${t}`)
    }
  }
}

/** `tokenLogProbs` through the chunked head: hidden states → `Head.logProbs`, never `[B, T−1, V]`. */
const chunked = (model: Transformer.Model, ids: tf.Tensor2D, P: number, options: Head.Options, fwd: Transformer.ForwardOptions): { logprobs: tf.Tensor2D; entropy: tf.Tensor2D } => {
  const [batch, time] = ids.shape
  const w: Head.Weight = model.lmHead === undefined ? { weight: model.embed as tf.Tensor2D, tied: true } : { weight: model.lmHead as tf.Tensor2D, tied: false }
  const flat = (t: tf.Tensor) => tf.reshape(t, [-1]) as tf.Tensor1D
  if (P === 0 || batch === 1) {
    const h = Transformer.hidden(model, tf.slice(ids, [0, 0], [batch, time - 1]), fwd) // [B·(T−1), C]
    const r = Head.logProbs(h, flat(tf.slice(ids, [0, 1], [batch, time - 1])), w, options)
    return { logprobs: tf.reshape(r.logprobs, [batch, time - 1]), entropy: tf.reshape(r.entropy, [batch, time - 1]) }
  }
  checkShared(ids, P)
  const S = time - 1 - P
  const prefixIds = tf.slice(ids, [0, 0], [1, P])
  const hs = S > 0 ? Transformer.hiddenShared(model, prefixIds, tf.slice(ids, [0, P], [batch, S]), fwd) : { prefix: Transformer.hidden(model, prefixIds, fwd), suffix: undefined }
  // One head call over: the P prefix positions (row 0's targets 1…P; the last only for its entropy),
  // the last prefix position once per row (each row's own token P; a gather, whose gradient sums the rows),
  // and the suffix positions.
  const lastRows = tf.gather(hs.prefix, tf.fill([batch], P - 1, "int32")) // [B, C]
  const h = tf.concat([hs.prefix, lastRows, ...(hs.suffix === undefined ? [] : [hs.suffix])], 0) as tf.Tensor2D
  const targets = tf.concat([
    flat(tf.slice(ids, [0, 1], [1, P])),
    flat(tf.slice(ids, [0, P], [batch, 1])),
    ...(S > 0 ? [flat(tf.slice(ids, [0, P + 1], [batch, S]))] : [])
  ])
  const r = Head.logProbs(h, targets as tf.Tensor1D, w, options)
  const rows = tf.zeros([batch, 1]) // broadcasting one row to B (its gradient is a sum)
  const logprobs: Array<tf.Tensor> = []
  const entropy: Array<tf.Tensor> = [tf.add(tf.reshape(tf.slice(r.entropy, [0], [P]), [1, P]), rows)]
  if (P > 1) logprobs.push(tf.add(tf.reshape(tf.slice(r.logprobs, [0], [P - 1]), [1, P - 1]), rows))
  logprobs.push(tf.reshape(tf.slice(r.logprobs, [P], [batch]), [batch, 1]))
  if (S > 0) {
    logprobs.push(tf.reshape(tf.slice(r.logprobs, [P + batch], [batch * S]), [batch, S]))
    entropy.push(tf.reshape(tf.slice(r.entropy, [P + batch], [batch * S]), [batch, S]))
  }
  return { logprobs: tf.concat(logprobs, 1) as tf.Tensor2D, entropy: tf.concat(entropy, 1) as tf.Tensor2D }
}

/** How many leading tokens all rows of row-major `ids` `[batch, time]` have in common (`time` when all agree). */
export const commonPrefixLength = (ids: Int32Array, batch: number, time: number): number => {
  for (let t = 0; t < time; t++) {
    const v = ids[t]
    for (let b = 1; b < batch; b++) if (ids[b * time + t] !== v) return t
  }
  return time
}

/** A padded training batch: `[B, T]` ids and `[B, T−1]` mask / sampling log-probs aligned with `tokenLogProbs`. */
export interface CompletionBatch {
  /** Row-major `[B, T]`: prompt ++ completion, right-padded with `padId`. */
  readonly ids: Int32Array
  /** Row-major `[B, T−1]`: 1 exactly where `ids[t+1]` is a completion token. */
  readonly mask: Float32Array
  /** Row-major `[B, T−1]`: the rollout's sampling log-prob of `ids[t+1]` where the mask is 1, else 0. */
  readonly oldLogprobs: Float32Array
  readonly batch: number
  readonly time: number
}

/**
 * Builds the padded batch from a rollouts batch (`prompt_ids`, `completion_ids`, `logprobs` columns).
 * A row whose `logprobs` length differs from its completion length is an error naming the row.
 */
export const completionBatch = (rollouts: RecordBatch, padId: number): CompletionBatch => {
  const col = (name: string) => {
    const v = rollouts.getChild(name)
    if (v === null) throw new Error(`rollouts batch has no "${name}" column`)
    return v
  }
  const prompts = Columns.int32List(col("prompt_ids") as any)
  const completions = Columns.int32List(col("completion_ids") as any)
  const old = Columns.float32List(col("logprobs") as any)
  const batch = rollouts.numRows
  let time = 2
  for (let b = 0; b < batch; b++) time = Math.max(time, Columns.rowLength(prompts, b) + Columns.rowLength(completions, b))
  const ids = new Int32Array(batch * time).fill(padId)
  const mask = new Float32Array(batch * (time - 1))
  const oldLogprobs = new Float32Array(batch * (time - 1))
  for (let b = 0; b < batch; b++) {
    const p = Columns.row(prompts, b), c = Columns.row(completions, b), lp = Columns.row(old, b)
    if (lp.length !== c.length) throw new RangeError(`rollout row ${b}: ${lp.length} logprobs for ${c.length} completion tokens`)
    if (p.length === 0 && c.length > 0) throw new RangeError(`rollout row ${b}: a completion needs at least one prompt token before it`)
    ids.set(p, b * time)
    ids.set(c, b * time + p.length)
    const start = b * (time - 1) + p.length - 1
    mask.fill(1, start, start + c.length)
    oldLogprobs.set(lp, start)
  }
  return { ids, mask, oldLogprobs, batch, time }
}
