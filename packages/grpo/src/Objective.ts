/**
 * The policy term p_{i,t} of the per-token loss, one row per `objective` (Â_i is the row's advantage, the same
 * on every token of o_i; m the completion mask; ρ_{i,t} = π_θ / π_old = exp(logp − old); sg = stop-gradient):
 *
 *   clip   PPO / GRPO (DeepSeekMath eq. 3)   p = −min(ρ Â, clip(ρ, 1 − ε_low, 1 + ε_high) Â)
 *   gspo   GSPO (Zheng et al. 2025)          s_i = exp((1/|o_i|) Σ_t m (logp − old)) = (π_θ(o_i) / π_old(o_i))^{1/|o_i|}
 *                                            p = −min(s_i Â, clip(s_i, 1 − ε_low, 1 + ε_high) Â)   on every token of o_i
 *   cispo  CISPO (MiniMax-M1, §3.1)          p = −sg(clip(ρ, 1 − ε_low, 1 + ε_high)) · Â · logp
 *
 * and, on `clip` or `gspo`, dual-clip (Ye et al. 2020, `delta` = c > 1): for Â < 0 the loss is bounded,
 *
 *   p ← min(p, −δ Â)        i.e. J = max(min(ρ Â, clip(ρ) Â), δ Â)       (Â ≥ 0: unchanged)
 *
 * so a token whose ratio has run far above 1 + ε on a negative advantage no longer pushes with weight ρ.
 *
 * Stated:
 * - gspo is computed in the sequence form and broadcast to the tokens of o_i. Since Â is constant over o_i,
 *   this is the paper's GSPO-token (s_{i,t} = sg(s_i) π_θ(o_{i,t}) / sg(π_θ(o_{i,t}))) in value and gradient under
 *   every aggregation: Σ_t m ∇p_i = −Â s_i Σ_t m ∇logp_t either way. With `lossType: "grpo"` (mean over tokens,
 *   then over sequences) it is the paper's objective; other aggregations weight sequences as they do tokens.
 *   GSPO's clip range is per sequence and far narrower than a token clip: the paper uses ε_low = 3e-4,
 *   ε_high = 4e-4 (`epsilon`, `epsilonHigh`), with β = 0. verl also caps log s_i at 10; this does not.
 * - cispo uses ε_low / ε_high as MiniMax writes them (ρ̂ = clip(ρ, 1 − ε_low^IS, 1 + ε_high^IS)); they leave the
 *   lower bound off, here `epsilon` ≥ 1. TRL's `epsilon_high` for cispo is the upper bound itself (ρ̂ ≤ ε_high),
 *   ours is 1 + `epsilonHigh`. Every token keeps its gradient, −ρ̂ Â ∇logp; the loss value is −ρ̂ Â logp, not the
 *   surrogate's −ρ Â, so `loss` reads differently (it is ≥ 0 where Â > 0).
 * - dual-clip's δ must be > 1 (as verl asserts for `clip_ratio_c`, default 3); it is refused with cispo, whose
 *   weight is already bounded.
 */
import * as tf from "@tensorflow/tfjs"
import { Schema } from "effect"

/** The policy term's form (see the module doc). */
export const Objective = Schema.Literals(["clip", "gspo", "cispo"])
/** The policy term's form. */
export type Objective = typeof Objective.Type

/** What the policy term reads of the loss config (`Loss.Config` has these keys). */
export interface Params {
  readonly objective: Objective
  readonly epsilon: number
  readonly epsilonHigh?: number | undefined
  readonly delta?: number | undefined
}

/** The policy term of a micro-batch, and what the clip diagnostics read. */
export interface Terms {
  /** p `[B, T]` (gspo: `[B, 1]`, the sequence's term, broadcast by the caller's mask). */
  readonly perToken: tf.Tensor2D
  /** The ratio the clip applies to: ρ `[B, T]`, or s_i `[B, 1]` under gspo. */
  readonly ratio: tf.Tensor2D
  /** 1 where dual-clip's bound −δÂ replaced p (`[B, T]` or `[B, 1]`); null without `delta`. */
  readonly dualClipped: tf.Tensor2D | null
}

/** Checks the objective's keys against each other. */
export const validate = (p: Params): string | undefined =>
  p.delta !== undefined && p.objective === "cispo"
    ? "delta (dual-clip) applies to objective \"clip\" or \"gspo\"; cispo's weight is clipped already"
    : undefined

/** Identity forward, zero gradient: sg(x). */
const stopGradient = tf.customGrad((...args) => ({ value: tf.clone(args[0] as tf.Tensor), gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy) }))

/** −min(r Â, clip(r, lo, hi) Â). */
const ppoClip = (ratio: tf.Tensor, adv: tf.Tensor, lo: number, hi: number): tf.Tensor2D => {
  const unclipped = tf.mul(ratio, adv)
  const clipped = tf.mul(tf.clipByValue(ratio, lo, hi), adv)
  return tf.neg(tf.minimum(unclipped, clipped)) as tf.Tensor2D
}

/** min(p, −δÂ) where Â < 0. */
const dualClip = (p: tf.Tensor2D, adv: tf.Tensor, delta: number) => {
  const bound = tf.mul(adv, -delta) // [B, 1]
  const negative = tf.less(adv, 0)
  return {
    perToken: tf.where(negative, tf.minimum(p, bound), p) as tf.Tensor2D,
    dualClipped: tf.cast(tf.logicalAnd(negative, tf.greater(p, bound)), "float32") as tf.Tensor2D
  }
}

/**
 * The policy term p of every token. `logprobs` (log π_θ, the one with a gradient), `oldLogprobs` and `mask`
 * are `[B, T]`, `adv` is Â `[B, 1]`.
 */
export const compute = (logprobs: tf.Tensor2D, oldLogprobs: tf.Tensor2D, mask: tf.Tensor2D, adv: tf.Tensor2D, p: Params): Terms => {
  const lo = 1 - p.epsilon, hi = 1 + (p.epsilonHigh ?? p.epsilon)
  if (p.objective === "cispo") {
    const ratio: tf.Tensor2D = tf.exp(tf.sub(logprobs, oldLogprobs)) // [B, T]
    const weight = stopGradient(tf.clipByValue(ratio, lo, hi))
    return { perToken: tf.neg(tf.mul(tf.mul(weight, adv), logprobs)) as tf.Tensor2D, ratio, dualClipped: null }
  }
  const ratio: tf.Tensor2D = p.objective === "gspo"
    ? tf.exp(tf.div(tf.sum(tf.mul(tf.sub(logprobs, oldLogprobs), mask), 1, true), tf.maximum(tf.sum(mask, 1, true), 1))) as tf.Tensor2D // [B, 1]
    : tf.exp(tf.sub(logprobs, oldLogprobs)) // [B, T]
  const perToken = ppoClip(ratio, adv, lo, hi)
  return p.delta === undefined ? { perToken, ratio, dualClipped: null } : { ratio, ...dualClip(perToken, adv, p.delta) }
}
