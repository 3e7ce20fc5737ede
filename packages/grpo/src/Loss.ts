/**
 * The GRPO loss with a k3 KL penalty (DeepSeekMath eq. 3, DeepSeek-R1 eq. 1), per token:
 *
 *   ℓ_{i,t} = w_{i,t} · h_{i,t} · p_{i,t} + β · KL_{i,t} − c · H_{i,t}
 *   p_{i,t} = −min(ρ Â_i, clip(ρ, 1 − ε_low, 1 + ε_high) Â_i),  ρ = exp(logp − old)   (`objective`: `Objective`)
 *   KL_{i,t} = π_ref / π_θ − log(π_ref / π_θ) − 1 = exp(ref − logp) − (ref − logp) − 1      (k3, unbiased, ≥ 0)
 *
 * where, each off (= 1 or 0) unless its key is set:
 *   w = min(π_old^trainer / π_sampler, C)  `tisCap` = C: truncated importance sampling (TIS; verl, TRL), a constant
 *   h = [H_{i,t} ≥ H_(k)]                  `entropyTopQuantile` = q: only the top-q entropy tokens ("Beyond the 80/20
 *                                          rule", Wang et al. 2025); H_(k) the k-th largest, k = ⌈q · Σ m⌉
 *   c                                      `entropyCoef`: entropy bonus, H = token entropy of π_θ (verl `entropy_coeff`)
 *
 * and then aggregated over the tokens of the optimizer step's batch by `lossType` (m = completion mask,
 * N = sequences in the optimizer step, K = micro-batches it is accumulated over, L = max completion length):
 *
 *   grpo     (DeepSeekMath)   (1/N) Σ_i [ Σ_t m ℓ / max(Σ_t m, 1) ]          per-sequence token mean, then mean
 *   bnpo     (TRL `bnpo`)     (1/K) Σ_k [ Σ_{i∈k,t} m ℓ / max(Σ_{i∈k,t} m, 1) ] token mean of each micro-batch
 *   dr_grpo  (Dr. GRPO)       Σ_{i,t} m ℓ / (N · L)                           sum over tokens / constant
 *   dapo     (DAPO)           Σ_{i,t} m ℓ / Σ_{i,t} m                          token mean of the whole step batch
 *
 * Each call sees one micro-batch; `Normalizer` carries N, K and the step's total token count so that
 * the gradients summed over the K micro-batches equal the gradient of the formula above on the whole batch.
 *
 * Departures from the paper, stated:
 * - `epsilon_high` may differ from `epsilon` (DAPO clip-higher); the paper has one ε.
 * - The paper's 1/|o_i| per-sequence normalisation is only the `grpo` variant; the others follow TRL / DAPO / Dr. GRPO.
 * - KL is added per token and aggregated with the same rule as the surrogate (as in TRL), not kept as a separate mean.
 * - w and h weight the policy term only (as verl and TRL apply TIS). w is a constant made by the update, which then
 *   takes π_old from its own forward pass (`UpdateBatch.truncatedIs`; verl's recomputed `old_log_prob`). h keeps the
 *   denominators (Σ m counts dropped tokens, as Wang et al.'s 1/Σ|o_i|); its quantile is over the micro-batch's
 *   tokens (the paper: "the batch"), so it depends on `microBatchSize` (unset: the minibatch). Ties are kept.
 */
import * as tf from "@tensorflow/tfjs"
import { Effect, Schema } from "effect"
import * as Objective from "./Objective.js"

/** How per-token losses are aggregated (see the module doc for the formulas). */
export const LossType = Schema.Literals(["grpo", "bnpo", "dr_grpo", "dapo"])
/** How per-token losses are aggregated. */
export type LossType = typeof LossType.Type

const positive = Schema.Finite.check(Schema.isGreaterThan(0))
const nonNegative = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0))

/** Loss configuration. `epsilonHigh` defaults to `epsilon`; `maxCompletionLength` is required by `dr_grpo`. */
export const Config = Schema.Struct({
  lossType: LossType.pipe(Schema.withDecodingDefaultKey(Effect.succeed("grpo" as const))),
  epsilon: positive.pipe(Schema.withDecodingDefaultKey(Effect.succeed(0.2))),
  epsilonHigh: Schema.optionalKey(positive),
  beta: nonNegative.pipe(Schema.withDecodingDefaultKey(Effect.succeed(0))),
  maxCompletionLength: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThan(0))),
  /** The policy term: `clip` (GRPO), `gspo`, `cispo` (`Objective`). */
  objective: Objective.Objective.pipe(Schema.withDecodingDefaultKey(Effect.succeed("clip" as const))),
  /** Dual-clip's δ > 1: for Â < 0 the loss is at most −δÂ (`Objective`). Unset: off. */
  delta: Schema.optionalKey(Schema.Finite.check(Schema.isGreaterThan(1))),
  /** C of truncated importance sampling, w = min(π_old^trainer / π_sampler, C). Unset: off (π_old = the sampler's). */
  tisCap: Schema.optionalKey(positive),
  /** c: the loss subtracts c · H per token (negative c minimises entropy). */
  entropyCoef: Schema.Finite.pipe(Schema.withDecodingDefaultKey(Effect.succeed(0))),
  /** q ∈ (0, 1]: the policy term keeps only the top-q entropy tokens of each micro-batch. Unset: all tokens. */
  entropyTopQuantile: Schema.optionalKey(Schema.Finite.check(Schema.isGreaterThan(0), Schema.isLessThanOrEqualTo(1)))
})
/** Loss configuration. */
export type Config = typeof Config.Type

/** One micro-batch of per-token values, all `[B, T]` aligned on completion tokens, except `advantages` `[B]`. */
export interface Input {
  /** log π_θ of the taken tokens; the gradient flows through this one only. */
  readonly logprobs: tf.Tensor2D
  /** log π_old of the same tokens (the rollout's; under TIS the trainer's own, `UpdateBatch.truncatedIs`). */
  readonly oldLogprobs: tf.Tensor2D
  /** log π_ref of the same tokens, or null when β = 0. */
  readonly refLogprobs: tf.Tensor2D | null
  readonly advantages: tf.Tensor1D
  /** TIS weights w `[B, T]` (constants), when `tisCap` is set. */
  readonly isWeights?: tf.Tensor2D | undefined
  /** Token entropy H of π_θ `[B, T]`; read only when `entropyCoef` ≠ 0 or `entropyTopQuantile` is set. */
  readonly entropy?: tf.Tensor2D
  /** 1 on completion tokens that count, 0 on prompt, padding and masked (truncated) completions. */
  readonly mask: tf.Tensor2D
}

/** Sizes of the whole optimizer-step batch that this micro-batch is one part of. */
export interface Normalizer {
  /** N: sequences in the optimizer step. */
  readonly sequences: number
  /** Σ m over the optimizer step (used by `dapo`). */
  readonly tokens: number
  /** K: micro-batches accumulated into the optimizer step (used by `bnpo`). */
  readonly microBatches: number
}

/** The scalar loss and token-mean diagnostics of one micro-batch. */
export interface Output {
  readonly loss: tf.Scalar
  /** Masked token means over this micro-batch; `kl` is 0 when there is no reference. */
  readonly kl: tf.Scalar
  /** Fraction of tokens with ρ < 1 − ε_low and Â < 0 (gradient cut off below). */
  readonly clipLow: tf.Scalar
  /** Fraction of tokens with ρ > 1 + ε_high and Â > 0 (gradient cut off above). */
  readonly clipHigh: tf.Scalar
  /** clipLow + clipHigh. */
  readonly clipRegion: tf.Scalar
  /** Fraction of tokens where dual-clip's bound −δÂ applied; null without `delta`. */
  readonly dualClip: tf.Scalar | null
}

/** Checks the config is complete for its loss type and objective. */
export const validate = (config: Config): string | undefined =>
  config.lossType === "dr_grpo" && config.maxCompletionLength === undefined
    ? "lossType \"dr_grpo\" needs maxCompletionLength (the constant L in Σ m ℓ / (N · L))"
    : Objective.validate(config)

/**
 * h: 1 on the tokens whose entropy is among the top ⌈q · Σ m⌉ of the micro-batch's counted tokens (m > 0).
 * Computed on the device, so the forward needs no read (WebGPU has only async ones): the counted entropies sorted
 * (`topk`), H_(k) picked with k from a host table of ⌈q · n⌉ for every count n (doubles, as a host sort would use).
 * A constant: wrapped in a zero gradient, which also keeps `topk` (no gradient) off the tape.
 */
const topEntropyMask = (entropy: tf.Tensor2D, mask: tf.Tensor2D, q: number): tf.Tensor2D => {
  const size = entropy.size
  const kth = tf.tensor1d(Int32Array.from({ length: size + 1 }, (_, n) => Math.max(Math.ceil(q * n) - 1, 0)), "int32") // [size + 1]: index of H_(k) among n
  const constant = tf.customGrad((...args) => {
    const [h, m] = args as [tf.Tensor2D, tf.Tensor2D]
    const counted = tf.greater(m, 0)
    const n = tf.sum(tf.cast(counted, "int32"))
    const sorted = tf.topk(tf.reshape(tf.where(counted, h, tf.fill(h.shape, -Infinity)), [size]), size).values // [size], descending
    const threshold = tf.where(tf.greater(n, 0), tf.gather(sorted, tf.gather(kth, n)), tf.scalar(Infinity)) // none counted: no token
    return { value: tf.cast(tf.greaterEqual(h, threshold), "float32"), gradFunc: () => [tf.zerosLike(h), tf.zerosLike(m)] }
  })
  return constant(entropy, mask) as tf.Tensor2D
}

/**
 * The loss of one micro-batch. Without `normalizer` the micro-batch is the whole optimizer step
 * (N = B, K = 1, tokens = Σ m). Call inside `tf.tidy` / `tf.variableGrads`; it allocates freely.
 */
export const compute = (input: Input, config: Config, normalizer?: Normalizer): Output => {
  const problem = validate(config)
  if (problem !== undefined) throw new Error(problem)
  const { logprobs, refLogprobs, mask, entropy } = input
  const adv = tf.expandDims(input.advantages, 1) as tf.Tensor2D // [B, 1]
  const policy = Objective.compute(logprobs, input.oldLogprobs, mask, adv, config)
  let perToken = policy.perToken // [B, T] (gspo [B, 1])
  if (input.isWeights !== undefined) perToken = tf.mul(perToken, input.isWeights)
  if ((config.entropyCoef !== 0 || config.entropyTopQuantile !== undefined) && entropy === undefined) throw new Error("entropyCoef / entropyTopQuantile need the token entropy")
  if (config.entropyTopQuantile !== undefined) perToken = tf.mul(perToken, topEntropyMask(entropy!, mask, config.entropyTopQuantile))
  let kl: tf.Tensor2D | null = null
  if (refLogprobs !== null && config.beta > 0) {
    const d = tf.sub(refLogprobs, logprobs)
    kl = tf.sub(tf.sub(tf.exp(d), d), 1) // [B, T]
    perToken = tf.add(perToken, tf.mul(kl, config.beta))
  }
  if (config.entropyCoef !== 0) perToken = tf.sub(perToken, tf.mul(entropy!, config.entropyCoef))
  const masked = tf.mul(perToken, mask) // [B, T]
  const B = mask.shape[0]
  const localTokens = tf.sum(mask)
  const n = normalizer ?? { sequences: B, tokens: -1, microBatches: 1 }
  let loss: tf.Scalar
  switch (config.lossType) {
    case "grpo": {
      const perSeq = tf.div(tf.sum(masked, 1), tf.maximum(tf.sum(mask, 1), 1)) // [B]
      loss = tf.div(tf.sum(perSeq), n.sequences)
      break
    }
    case "bnpo":
      loss = tf.div(tf.div(tf.sum(masked), tf.maximum(localTokens, 1)), n.microBatches)
      break
    case "dr_grpo":
      loss = tf.div(tf.sum(masked), n.sequences * config.maxCompletionLength!)
      break
    case "dapo":
      loss = tf.div(tf.sum(masked), n.tokens >= 0 ? Math.max(n.tokens, 1) : tf.maximum(localTokens, 1))
      break
  }
  const tokenMean = (x: tf.Tensor) => tf.div(tf.sum(tf.mul(x, mask)), tf.maximum(localTokens, 1)) as tf.Scalar
  const isLow = tf.logicalAnd(tf.less(policy.ratio, 1 - config.epsilon), tf.less(adv, 0))
  const isHigh = tf.logicalAnd(tf.greater(policy.ratio, 1 + (config.epsilonHigh ?? config.epsilon)), tf.greater(adv, 0))
  const clipLow = tokenMean(tf.cast(isLow, "float32"))
  const clipHigh = tokenMean(tf.cast(isHigh, "float32"))
  return {
    loss,
    kl: kl === null ? tf.scalar(0) : tokenMean(kl),
    clipLow,
    clipHigh,
    clipRegion: tf.add(clipLow, clipHigh),
    dualClip: policy.dualClipped === null ? null : tokenMean(policy.dualClipped)
  }
}
