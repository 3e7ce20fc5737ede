import * as tf from "@tensorflow/tfjs"
import { Schema } from "effect"
import { describe, expect, it } from "vitest"
import { Loss } from "../src/index.js"

const config = (c: Partial<Loss.Config> = {}) => Schema.decodeUnknownSync(Loss.Config)({ epsilon: 0.2, epsilonHigh: 0.28, ...c })

// Two sequences, three token slots. old log-probs are 0, so ρ = exp(logprobs).
// row 0: ρ = [1.0, 1.5, 0.5], all counted, Â = +1
// row 1: ρ = [1.1, 0.7, 2.0], last slot masked, Â = −1
// per-token ℓ = −min(ρÂ, clip(ρ, 0.8, 1.28)Â):
//   row 0: [−1.0, −1.28 (clipped high), −0.5]       sum −2.78 over 3 tokens
//   row 1: [ 1.1,  0.8 (clipped low)]               sum  1.9  over 2 tokens
const rho = [[1.0, 1.5, 0.5], [1.1, 0.7, 2.0]]
const input = (): Loss.Input => ({
  logprobs: tf.log(tf.tensor2d(rho)) as tf.Tensor2D,
  oldLogprobs: tf.zeros([2, 3]) as tf.Tensor2D,
  refLogprobs: null,
  advantages: tf.tensor1d([1, -1]),
  mask: tf.tensor2d([[1, 1, 1], [1, 1, 0]])
})
const lossOf = (c: Loss.Config, n?: Loss.Normalizer, i: Loss.Input = input()) => tf.tidy(() => Loss.compute(i, c, n).loss.dataSync()[0])

describe("Loss.compute", () => {
  it("grpo: per-sequence token mean, then mean over the N sequences of the step", () => {
    expect(lossOf(config({ lossType: "grpo" }))).toBeCloseTo((-2.78 / 3 + 1.9 / 2) / 2, 5)
    // the same micro-batch as half of a 4-sequence step
    expect(lossOf(config({ lossType: "grpo" }), { sequences: 4, tokens: 10, microBatches: 2 })).toBeCloseTo((-2.78 / 3 + 1.9 / 2) / 4, 5)
  })

  it("bnpo: token mean of the micro-batch, divided by the number of micro-batches", () => {
    expect(lossOf(config({ lossType: "bnpo" }))).toBeCloseTo(-0.88 / 5, 5)
    expect(lossOf(config({ lossType: "bnpo" }), { sequences: 4, tokens: 10, microBatches: 2 })).toBeCloseTo(-0.88 / 5 / 2, 5)
  })

  it("dr_grpo: token sum over N × max completion length", () => {
    expect(lossOf(config({ lossType: "dr_grpo", maxCompletionLength: 4 }))).toBeCloseTo(-0.88 / 8, 5)
    expect(lossOf(config({ lossType: "dr_grpo", maxCompletionLength: 4 }), { sequences: 4, tokens: 10, microBatches: 2 })).toBeCloseTo(-0.88 / 16, 5)
    expect(() => lossOf(config({ lossType: "dr_grpo" }))).toThrow(/maxCompletionLength/)
  })

  it("dapo: token sum over the tokens of the whole step", () => {
    expect(lossOf(config({ lossType: "dapo" }))).toBeCloseTo(-0.88 / 5, 5)
    expect(lossOf(config({ lossType: "dapo" }), { sequences: 4, tokens: 11, microBatches: 2 })).toBeCloseTo(-0.88 / 11, 5)
  })

  it("clip ratios count low (ρ < 1−ε, Â < 0) and high (ρ > 1+ε_high, Â > 0) tokens among counted tokens", () => {
    const [low, high, region, kl] = tf.tidy(() => {
      const o = Loss.compute(input(), config())
      return [o.clipLow, o.clipHigh, o.clipRegion, o.kl].map((t) => t.dataSync()[0])
    })
    expect(low).toBeCloseTo(0.2, 6)
    expect(high).toBeCloseTo(0.2, 6)
    expect(region).toBeCloseTo(0.4, 6)
    expect(kl).toBe(0)
  })

  it("epsilon_high defaults to epsilon (symmetric clip)", () => {
    // row 0 slot 1 is now clipped at 1.2: row sums −2.7 and 1.9
    expect(lossOf(Schema.decodeUnknownSync(Loss.Config)({ lossType: "dapo", epsilon: 0.2 }))).toBeCloseTo(-0.8 / 5, 5)
  })

  it("adds β · k3 KL per token: π_ref/π_θ − log(π_ref/π_θ) − 1", () => {
    // ref log-probs 0 → π_ref/π_θ = 1/ρ, KL = 1/ρ + log ρ − 1
    const k3 = (r: number) => 1 / r + Math.log(r) - 1
    const kls = [k3(1.0), k3(1.5), k3(0.5), k3(1.1), k3(0.7)]
    const beta = 0.1
    const withRef = (): Loss.Input => ({ ...input(), refLogprobs: tf.zeros([2, 3]) as tf.Tensor2D })
    const [loss, kl] = tf.tidy(() => {
      const o = Loss.compute(withRef(), config({ lossType: "dapo", beta }))
      return [o.loss.dataSync()[0], o.kl.dataSync()[0]]
    })
    const klSum = kls.reduce((a, b) => a + b, 0)
    expect(kl).toBeCloseTo(klSum / 5, 5)
    expect(loss).toBeCloseTo((-0.88 + beta * klSum) / 5, 5)
    // β = 0 ignores a reference that happens to be given
    expect(lossOf(config({ lossType: "dapo", beta: 0 }), undefined, withRef())).toBeCloseTo(-0.88 / 5, 5)
  })

  it("the gradient is zero exactly where the clipped objective is flat (and on masked tokens)", () => {
    const x = input()
    const grad = tf.tidy(() => {
      const f = (lp: tf.Tensor) => Loss.compute({ ...x, logprobs: lp as tf.Tensor2D }, config({ lossType: "dapo" })).loss
      return Array.from(tf.grad(f)(x.logprobs).dataSync())
    })
    // d ℓ / d logp = −Â ρ where unclipped, divided by the 5 counted tokens
    const expected = [-1.0 / 5, 0 /* ρ = 1.5 > 1.28, Â > 0 */, -0.5 / 5 /* ρ < 0.8 but Â > 0: not clipped */,
      1.1 / 5, 0 /* ρ = 0.7 < 0.8, Â < 0 */, 0 /* masked */]
    grad.forEach((g, i) => expect(g).toBeCloseTo(expected[i], 6))
  })

  it("the KL gradient pulls π_θ toward π_ref: d KL / d logp = 1 − π_ref/π_θ", () => {
    const lp = tf.tensor2d([[Math.log(0.5)]])
    const g = tf.tidy(() => {
      const f = (l: tf.Tensor) =>
        Loss.compute({ logprobs: l as tf.Tensor2D, oldLogprobs: l as tf.Tensor2D, refLogprobs: tf.zeros([1, 1]) as tf.Tensor2D, advantages: tf.zeros([1]) as tf.Tensor1D, mask: tf.ones([1, 1]) as tf.Tensor2D }, config({ lossType: "dapo", beta: 1 })).loss
      return tf.grad(f)(lp).dataSync()[0]
    })
    // ρ's own gradient is Â-weighted (Â = 0); old = logp only in value, its gradient also flows but is × Â = 0
    expect(g).toBeCloseTo(1 - 1 / 0.5, 5)
  })
})
