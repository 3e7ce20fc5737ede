/**
 * A reward model: the policy transformer with a scalar head, read at the last token of prompt + completion.
 *
 *   r(x, y) = w · logits_T(x ⧺ y) + b        logits_T = W_lm · n(h_T), the last real position
 *
 * Deviation from the usual "linear head on the final hidden state": `@r1flow/model` exposes logits,
 * not hidden states, so the head reads the logits. Since logits = W_lm · n(h_T), this is the linear head
 * u · n(h_T) with u = W_lmᵀ w (any u in the row space of W_lm, all of ℝ^C when V ≥ C and W_lm has full
 * rank), trained jointly with the transformer as in InstructGPT / DeepSeek's reward models.
 *
 * Training minimises the Bradley–Terry pairwise loss over (prompt, chosen, rejected):
 *
 *   L = −E[ log σ(r(x, y_c) − r(x, y_r)) ]
 *
 * Sequences longer than `maxSeqLen` keep their last `maxSeqLen` tokens (the completion's end matters most).
 */
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { Read } from "@r1flow/backend"
import { Columns, Rng } from "@r1flow/core"
import { Checkpoint, Transformer } from "@r1flow/model"
import * as tf from "@tensorflow/tfjs"
import { Effect, Schema } from "effect"

/** The scalar head's file inside a checkpoint directory (next to `model.safetensors` and `config.json`). */
export const HEAD_FILE = "reward_head.json"

/** A reward model: the transformer plus the head `w` `[V]` and bias `b` `[]`. */
export interface RewardModel {
  readonly policy: Transformer.Model
  readonly w: tf.Variable
  readonly b: tf.Variable
  /** Every trainable variable (transformer weights, then head). */
  readonly variables: ReadonlyArray<tf.Variable>
  readonly dispose: () => void
}

/** A checkpoint could not be read or written. */
export class RewardModelError extends Schema.TaggedError<RewardModelError>()("RewardModelError", {
  path: Schema.String,
  message: Schema.String
}) {}

const wrap = (policy: Transformer.Model, w: Float32Array, b: number): RewardModel => {
  const wv = tf.variable(tf.tensor2d(w, [policy.config.vocabSize, 1]), true)
  const bv = tf.variable(tf.scalar(b), true)
  return {
    policy,
    w: wv,
    b: bv,
    variables: [...policy.weights.map((x) => x.variable), wv, bv],
    dispose: () => {
      policy.dispose()
      wv.dispose()
      bv.dispose()
    }
  }
}

/** A fresh reward model: transformer from `rng`, head zero (every pair starts at margin 0). */
export const init = (config: Transformer.Config, rng: Rng.Stream): RewardModel =>
  wrap(Transformer.init(config, rng), new Float32Array(config.vocabSize), 0)

/** Token sequences packed right-padded for one forward pass, with the last real position of each row. */
export interface Packed {
  readonly ids: Int32Array // [B, T]
  readonly last: Int32Array // [B], index into the flattened [B·T]
  readonly batch: number
  readonly time: number
}

/** Packs `prompt ⧺ completion` per row; rows over `maxSeqLen` keep their last `maxSeqLen` tokens. */
export const pack = (rows: ReadonlyArray<readonly [ArrayLike<number>, ArrayLike<number>]>, maxSeqLen: number): Packed => {
  const seqs = rows.map(([p, c]) => {
    const all = new Int32Array(p.length + c.length)
    all.set(p as ArrayLike<number>, 0)
    all.set(c as ArrayLike<number>, p.length)
    return all.length > maxSeqLen ? all.subarray(all.length - maxSeqLen) : all
  })
  const offsets = new Int32Array(seqs.length + 1)
  seqs.forEach((s, i) => { offsets[i + 1] = offsets[i] + s.length })
  const values = new Int32Array(offsets[seqs.length])
  seqs.forEach((s, i) => values.set(s, offsets[i]))
  const padded = Columns.toPadded({ values, offsets, rows: seqs.length }, { padId: 0 })
  const last = Int32Array.from(seqs, (s, i) => i * padded.time + Math.max(0, s.length - 1))
  return { ids: padded.ids, last, batch: padded.batch, time: padded.time }
}

/** Rewards `[B]` of packed sequences. Differentiable; call inside `tf.tidy` / `tf.variableGrads`. */
export const rewards = (model: RewardModel, packed: Packed): tf.Tensor1D => {
  const ids = tf.tensor2d(packed.ids, [packed.batch, packed.time], "int32")
  const logits = Transformer.forward(model.policy, ids) // [B, T, V]
  const flat = tf.reshape(logits, [packed.batch * packed.time, model.policy.config.vocabSize]) // [B·T, V]
  // Selection as a product with a one-hot [B, B·T] matrix: the gradient of `gather` needs
  // UnsortedSegmentSum, which the wasm backend lacks.
  const sel = new Float32Array(packed.batch * packed.batch * packed.time)
  packed.last.forEach((at, b) => { sel[b * packed.batch * packed.time + at] = 1 })
  const lastLogits = tf.matMul(tf.tensor2d(sel, [packed.batch, packed.batch * packed.time]), flat) // [B, V]
  return tf.add(tf.reshape(tf.matMul(lastLogits, model.w as tf.Tensor2D), [packed.batch]), model.b) as tf.Tensor1D
}

/** Rewards of `(prompt, completion)` token rows, in batches of `batchSize` (no gradients); one async read per batch. */
export const score = async (model: RewardModel, rows: ReadonlyArray<readonly [ArrayLike<number>, ArrayLike<number>]>, batchSize = 32): Promise<Float32Array> => {
  const out = new Float32Array(rows.length)
  for (let start = 0; start < rows.length; start += batchSize) {
    const part = rows.slice(start, start + batchSize)
    out.set(await Read.floats(tf.tidy(() => rewards(model, pack(part, model.policy.config.maxSeqLen)))), start) // [part]
  }
  return out
}

/** A tokenized preference pair. */
export interface Pair {
  readonly prompt: ArrayLike<number>
  readonly chosen: ArrayLike<number>
  readonly rejected: ArrayLike<number>
}

/** Mean Bradley–Terry loss of `pairs` (chosen and rejected run as one batch of 2N). Differentiable. */
export const loss = (model: RewardModel, pairs: ReadonlyArray<Pair>): tf.Scalar => {
  const n = pairs.length
  const packed = pack([...pairs.map((p) => [p.prompt, p.chosen] as const), ...pairs.map((p) => [p.prompt, p.rejected] as const)], model.policy.config.maxSeqLen)
  const r = rewards(model, packed) // [2N]
  const margin = tf.sub(tf.slice(r, [0], [n]), tf.slice(r, [n], [n])) // [N]
  // −log σ(m) = softplus(−m), stable for large |m|.
  return tf.mean(tf.softplus(tf.neg(margin))) as tf.Scalar
}

/** Fraction of pairs whose chosen completion gets the higher reward (ties count as wrong). */
export const accuracy = async (model: RewardModel, pairs: ReadonlyArray<Pair>, batchSize = 64): Promise<number> => {
  if (pairs.length === 0) return NaN
  const chosen = await score(model, pairs.map((p) => [p.prompt, p.chosen] as const), batchSize)
  const rejected = await score(model, pairs.map((p) => [p.prompt, p.rejected] as const), batchSize)
  let right = 0
  for (let i = 0; i < pairs.length; i++) if (chosen[i] > rejected[i]) right++
  return right / pairs.length
}

/** Saves the transformer (safetensors + config.json) and the head (`reward_head.json`) into `dir`. */
export const save = (dir: string, model: RewardModel): Effect.Effect<void, RewardModelError | Checkpoint.CheckpointError> =>
  Effect.gen(function*() {
    yield* Checkpoint.save(dir, model.policy)
    const [w, b] = yield* Effect.promise(() => Promise.all([model.w.data(), model.b.data()]))
    const head = { w: Array.from(w), b: b[0] }
    yield* Effect.tryPromise({
      try: () => fs.writeFile(path.join(dir, HEAD_FILE), JSON.stringify(head)),
      catch: (e) => new RewardModelError({ path: path.join(dir, HEAD_FILE), message: `cannot write: ${(e as Error).message}` })
    })
  })

const Head = Schema.Struct({ w: Schema.Array(Schema.Finite), b: Schema.Finite })

/** Loads a reward-model checkpoint written by `save`. */
export const load = (dir: string): Effect.Effect<RewardModel, RewardModelError | Checkpoint.CheckpointError> =>
  Effect.gen(function*() {
    const file = path.join(dir, HEAD_FILE)
    const text = yield* Effect.tryPromise({
      try: () => fs.readFile(file, "utf8"),
      catch: (e) => new RewardModelError({ path: file, message: `cannot read the scalar head (is this a reward-model checkpoint?): ${(e as Error).message}` })
    })
    const head = yield* Effect.try({ try: () => JSON.parse(text) as unknown, catch: (e) => new RewardModelError({ path: file, message: `not JSON: ${(e as Error).message}` }) }).pipe(
      Effect.flatMap((raw) => Schema.decodeUnknownEffect(Head)(raw)),
      Effect.mapError((e) => (e._tag === "RewardModelError" ? e : new RewardModelError({ path: file, message: `bad head: ${e.message}` })))
    )
    const policy = yield* Checkpoint.load(dir)
    if (head.w.length !== policy.config.vocabSize) {
      policy.dispose()
      return yield* new RewardModelError({ path: file, message: `head has ${head.w.length} weights, the transformer's vocabulary is ${policy.config.vocabSize}` })
    }
    return wrap(policy, Float32Array.from(head.w), head.b)
  })
