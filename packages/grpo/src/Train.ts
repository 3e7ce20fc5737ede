/**
 * The optimizer step both trainers (GRPO `Update`, `Sft`) share:
 *
 *   g = Σ_k ∇ L_k          over K micro-batches (each L_k already carries its share of the normaliser)
 *   ‖g‖ = √(Σ ‖g_w‖²)      → non-finite loss or norm: skip (weights and moments untouched), count, maybe stop
 *   g ← g · min(1, c / ‖g‖) → AdamW
 *
 * Gradient accumulation keeps one running sum per weight, so a batch larger than memory trains by
 * lowering the micro-batch size without changing the result (up to float summation order).
 */
import { Read } from "@r1flow/backend"
import * as tf from "@tensorflow/tfjs"
import { Effect } from "effect"
import type * as Guard from "./Guard.js"
import * as Optimizer from "./Optimizer.js"

/** A micro-batch's loss: called inside `tf.variableGrads`; may `tf.keep` side tensors it reports. */
export type MicroLoss = () => tf.Scalar

/** What one optimizer step did. */
export interface StepResult {
  readonly applied: boolean
  /** Σ_k L_k: the step batch's loss. */
  readonly loss: number
  /** Global gradient norm before clipping. */
  readonly gradNorm: number
  /** Learning rate used (the one it would have used, when skipped). */
  readonly learningRate: number
}

/**
 * Accumulates the gradients of `micro` losses and applies one guarded, clipped AdamW update. The K losses and
 * ‖g‖ come back in one async read (the guard needs them on the host); Σ_k L_k is summed there in micro-batch order.
 */
export const optimizerStep = (
  optimizer: Optimizer.AdamW,
  guard: Guard.Guard,
  stepIndex: number,
  micro: ReadonlyArray<MicroLoss>
): Effect.Effect<StepResult, Guard.NonFiniteError> =>
  Effect.gen(function*() {
    const { grads, values } = accumulate(optimizer.weights.map((w) => w.variable), micro)
    const read = tf.tidy(() => tf.stack([...values, Optimizer.globalNorm(grads)])) // [K + 1]: L_1 … L_K, ‖g‖
    tf.dispose(values)
    const host = yield* Read.floatsEffect(read).pipe(Effect.onError(() => Effect.sync(() => tf.dispose(grads))))
    let loss = 0
    for (let k = 0; k < values.length; k++) loss += host[k]
    const gradNorm = host[values.length]
    const learningRate = optimizer.currentLearningRate()
    const ok = yield* guard.check(stepIndex, { loss, gradNorm }).pipe(Effect.onError(() => Effect.sync(() => tf.dispose(grads))))
    if (ok) optimizer.apply(grads, Optimizer.clipScale(gradNorm, optimizer.config.maxGradNorm))
    tf.dispose(grads)
    return { applied: ok, loss, gradNorm, learningRate }
  })

/**
 * Σ_k ∇ L_k, one running sum per weight, and the K losses. A micro-loss that throws (a heap exhausted mid-way)
 * takes the sums and losses made so far with it, so a caller that retries smaller does not leak them.
 */
const accumulate = (vars: ReadonlyArray<tf.Variable>, micro: ReadonlyArray<MicroLoss>): { grads: Array<tf.Tensor>; values: Array<tf.Scalar> } => {
  let acc: Array<tf.Tensor> | null = null
  const values: Array<tf.Scalar> = []
  try {
    for (const f of micro) {
      const { value, grads } = tf.variableGrads(f, vars as Array<tf.Variable>)
      values.push(value)
      const ordered = vars.map((v) => grads[v.name] ?? tf.zerosLike(v))
      if (acc === null) acc = ordered
      else {
        const prev: Array<tf.Tensor> = acc
        acc = prev.map((a, i) => tf.add(a, ordered[i]))
        tf.dispose([...prev, ...ordered])
      }
    }
  } catch (e) {
    tf.dispose([...(acc ?? []), ...values])
    throw e
  }
  return { grads: acc ?? vars.map((v) => tf.zerosLike(v)), values }
}

/** A trainer's state besides the weights, as a checkpoint stores it. */
export interface TrainerState {
  readonly optimizer: Optimizer.State
  /** Rollout batches (GRPO) or batches (SFT) trained on. */
  readonly steps: number
  /** Optimizer steps attempted (applied or skipped). */
  readonly updates: number
  readonly guard: Guard.State
}

/** `xs` cut into consecutive pieces of `size` (the last may be shorter): mini- and micro-batches of row indices. */
export const chunks = <A>(xs: ReadonlyArray<A>, size: number): Array<Array<A>> => {
  const out: Array<Array<A>> = []
  for (let i = 0; i < xs.length; i += size) out.push(xs.slice(i, i + size))
  return out
}
