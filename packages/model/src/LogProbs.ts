/**
 * Per-token log-probabilities and entropies of sequences under a policy, and the padded batch GRPO
 * trains on, built from a rollouts batch.
 *
 *   logprobs[b, t] = log π(ids[b, t+1] | ids[b, ≤t])        (untempered: softmax of the raw logits)
 *   entropy[b, t]  = −Σ_v π(v | ids[b, ≤t]) log π(v | ids[b, ≤t])
 *
 * Positions that are prompt or padding are not masked here: the mask from `completionBatch` selects
 * the completion tokens, and the loss multiplies by it.
 */
import * as tf from "@tensorflow/tfjs"
import { Columns } from "@r1flow/core"
import type { RecordBatch } from "apache-arrow"
import * as Transformer from "./Transformer.js"

/**
 * `logprobs` and `entropy`, both `[B, T−1]`, of `ids` `[B, T]` (int32). Differentiable.
 * Only the first T−1 positions are run through the model (the last one predicts nothing we score).
 */
export const tokenLogProbs = (model: Transformer.Model, ids: tf.Tensor2D): { logprobs: tf.Tensor2D; entropy: tf.Tensor2D } =>
  tf.tidy(() => {
    const [batch, time] = ids.shape
    if (time < 2) throw new RangeError(`tokenLogProbs needs at least 2 tokens per row, got ${time}`)
    const inputs = tf.slice(ids, [0, 0], [batch, time - 1])
    const targets = tf.slice(ids, [0, 1], [batch, time - 1])
    const logp = tf.logSoftmax(Transformer.forward(model, inputs)) // [B, T−1, V]
    const logprobs = tf.sum(tf.mul(logp, Transformer.oneHotF32(targets, model.config.vocabSize)), -1) as tf.Tensor2D
    const entropy = tf.neg(tf.sum(tf.mul(tf.exp(logp), logp), -1)) as tf.Tensor2D
    return { logprobs, entropy }
  })

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
