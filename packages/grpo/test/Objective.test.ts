import * as tf from "@tensorflow/tfjs"
import { Schema } from "effect"
import { describe, expect, it } from "vitest"
import { Loss } from "../src/index.js"

const config = (c: Record<string, unknown>) => Schema.decodeUnknownSync(Loss.Config)(c)

// The batch of Loss.test.ts: old log-probs 0, so ρ = exp(logprobs); the last slot of row 1 is masked.
const rho = [[1.0, 1.5, 0.5], [1.1, 0.7, 2.0]]
const mask = [[1, 1, 1], [1, 1, 0]]
const input = (r = rho, adv = [1, -1], m = mask): Loss.Input => ({
  logprobs: tf.log(tf.tensor2d(r)) as tf.Tensor2D,
  oldLogprobs: tf.zeros([r.length, r[0].length]) as tf.Tensor2D,
  refLogprobs: null,
  advantages: tf.tensor1d(adv),
  mask: tf.tensor2d(m)
})
/** Numbers read inside `tf.tidy` (whose own return type holds tensors only). */
const tidy = <A>(f: () => A): A => {
  let out: A | undefined
  tf.tidy(() => { out = f() })
  return out!
}
/** loss, d loss / d logprobs, and the diagnostics of `x` under `c`. */
const run = (c: Loss.Config, x: Loss.Input = input()) => tidy(() => {
  const f = (lp: tf.Tensor) => Loss.compute({ ...x, logprobs: lp as tf.Tensor2D }, c).loss
  const o = Loss.compute(x, c)
  return {
    loss: o.loss.dataSync()[0],
    grad: Array.from(tf.grad(f)(x.logprobs).dataSync()),
    clipLow: o.clipLow.dataSync()[0],
    clipHigh: o.clipHigh.dataSync()[0],
    dualClip: o.dualClip === null ? null : o.dualClip.dataSync()[0]
  }
})
const close = (xs: ReadonlyArray<number>, ys: ReadonlyArray<number>, digits = 6) => xs.forEach((x, i) => expect(x).toBeCloseTo(ys[i], digits))

describe("Objective: gspo (sequence-level ratio)", () => {
  // s_0 = (1 · 1.5 · 0.5)^(1/3) = 0.75^(1/3) = 0.908560, s_1 = (1.1 · 0.7)^(1/2) = 0.77^(1/2) = 0.877496
  // GSPO's ε: clip(s, 0.9997, 1.0004).  Row 0, Â = +1: −min(0.908560, 0.9997) = −0.908560 (unclipped: s < 1 − ε, Â > 0).
  // Row 1, Â = −1: −min(−0.877496, −0.9997) = 0.9997 (clipped below: flat, no gradient).
  const s0 = 0.75 ** (1 / 3)
  const gspo = (lossType: string) => config({ objective: "gspo", epsilon: 3e-4, epsilonHigh: 4e-4, lossType })

  it("grpo aggregation: the mean of the sequences' terms; gradient s_i/|o_i| per token of an unclipped sequence", () => {
    const r = run(gspo("grpo"))
    expect(r.loss).toBeCloseTo((-s0 + 0.9997) / 2, 6)
    // L = (1/2)(−s_0 + const), ∂s_0/∂logp_t = s_0 / 3
    close(r.grad, [-s0 / 6, -s0 / 6, -s0 / 6, 0, 0, 0])
    // the clip diagnostics read s_i on every counted token of its sequence
    expect(r.clipLow).toBeCloseTo(2 / 5, 6)
    expect(r.clipHigh).toBe(0)
  })

  it("dapo aggregation: each sequence's term on each of its tokens (= GSPO-token): gradient s_i per token / Σ m", () => {
    const r = run(gspo("dapo"))
    expect(r.loss).toBeCloseTo((3 * -s0 + 2 * 0.9997) / 5, 6)
    close(r.grad, [-s0 / 5, -s0 / 5, -s0 / 5, 0, 0, 0])
  })

  it("with a token-sized ε nothing is clipped: row 1 is −min(−s_1, −clip(s_1, 0.8, 1.28)) = s_1", () => {
    const s1 = Math.sqrt(0.77)
    const r = run(config({ objective: "gspo", epsilon: 0.2, epsilonHigh: 0.28 }))
    expect(r.loss).toBeCloseTo((-s0 + s1) / 2, 6)
    close(r.grad, [-s0 / 6, -s0 / 6, -s0 / 6, s1 / 4, s1 / 4, 0])
  })
})

describe("Objective: cispo (clipped, stop-gradient IS weight)", () => {
  // ρ̂ = clip(ρ, 0.8, 1.28): row 0 [1.0, 1.28, 0.8], row 1 [1.1, 0.8, ·]; p = −ρ̂ Â log ρ
  const c = config({ objective: "cispo", epsilon: 0.2, epsilonHigh: 0.28, lossType: "dapo" })
  it("loss −Σ m ρ̂ Â logp / Σ m; every counted token keeps its gradient −ρ̂ Â / Σ m, clipped or not", () => {
    const r = run(c)
    const p = [-1.0 * Math.log(1.0), -1.28 * Math.log(1.5), -0.8 * Math.log(0.5), 1.1 * Math.log(1.1), 0.8 * Math.log(0.7)]
    // = [0, −0.518995, 0.554518, 0.104841, −0.285340]
    expect(r.loss).toBeCloseTo(p.reduce((a, b) => a + b) / 5, 6)
    expect(r.loss).toBeCloseTo(-0.0289952, 6)
    // the clip objective zeroes slots 1 and 4 here (Loss.test.ts); cispo does not. Without the stop-gradient
    // slot 3 (ρ = 1.1, inside the range) would be (ρ + ρ log ρ)/5 = 0.240968, not 1.1/5.
    close(r.grad, [-1.0 / 5, -1.28 / 5, -0.8 / 5, 1.1 / 5, 0.8 / 5, 0])
  })

  it("epsilon ≥ 1 leaves the lower bound off (MiniMax's setting)", () => {
    const r = run(config({ objective: "cispo", epsilon: 1, epsilonHigh: 0.28, lossType: "dapo" }))
    close(r.grad, [-1.0 / 5, -1.28 / 5, -0.5 / 5, 1.1 / 5, 0.7 / 5, 0])
  })
})

describe("Objective: dual-clip (delta)", () => {
  // Row 0, Â = −1, ρ = [3.0, 1.1, 0.5]: clip term −min(−ρ, −clip(ρ, 0.8, 1.2)) = [3.0, 1.1, 0.8]; bound −δÂ = 2 → [2, 1.1, 0.8]
  // Row 1, Â = +1, ρ = [3.0, 1.0, 0.5]: −min(ρ, clip(ρ)) = [−1.2, −1.0, −0.5], untouched by δ.
  const x = () => input([[3.0, 1.1, 0.5], [3.0, 1.0, 0.5]], [-1, 1], [[1, 1, 1], [1, 1, 1]])
  it("for Â < 0 the loss is bounded by −δÂ, and that token's gradient is 0", () => {
    const r = run(config({ epsilon: 0.2, delta: 2, lossType: "dapo" }), x())
    expect(r.loss).toBeCloseTo((2 + 1.1 + 0.8 - 1.2 - 1.0 - 0.5) / 6, 6)
    close(r.grad, [0, 1.1 / 6, 0, 0, -1.0 / 6, -0.5 / 6])
    expect(r.dualClip).toBeCloseTo(1 / 6, 6)
    const plain = run(config({ epsilon: 0.2, lossType: "dapo" }), x())
    expect(plain.loss).toBeCloseTo((3 + 1.1 + 0.8 - 1.2 - 1.0 - 0.5) / 6, 6)
    expect(plain.grad[0]).toBeCloseTo(3 / 6, 6)
    expect(plain.dualClip).toBeNull()
  })

  it("applies to gspo's sequence ratio; is refused with cispo and for δ ≤ 1", () => {
    // Row 0: s_0 = (3 · 1.1 · 0.5)^(1/3) = 1.181666 inside [0.8, 1.2]: term s_0 > δ = 1.1 → 1.1 on its 3 tokens.
    // Row 1: s_1 = (3 · 1 · 0.5)^(1/3) = 1.144714, Â = +1: −s_1. grpo: (1.1 − 1.144714) / 2
    const r = run(config({ objective: "gspo", epsilon: 0.2, delta: 1.1 }), x())
    expect(r.loss).toBeCloseTo((1.1 - Math.cbrt(1.5)) / 2, 6)
    close(r.grad, [0, 0, 0, -Math.cbrt(1.5) / 6, -Math.cbrt(1.5) / 6, -Math.cbrt(1.5) / 6])
    expect(r.dualClip).toBeCloseTo(3 / 6, 6)
    expect(() => run(config({ objective: "cispo", delta: 3 }))).toThrow(/delta/)
    expect(() => config({ delta: 1 })).toThrow()
  })
})

describe("Loss: TIS weights, entropy bonus, top-entropy mask", () => {
  // The clip objective's per-token terms (Loss.test.ts): row 0 [−1.0, −1.28, −0.5], row 1 [1.1, 0.8]; Σ = −0.88 over 5 tokens
  const entropy = () => tf.tensor2d([[1, 2, 3], [4, 5, 6]]) as tf.Tensor2D

  it("TIS: w multiplies the policy term of each token (value and gradient)", () => {
    const w = () => tf.tensor2d([[0.5, 2, 1], [1, 3, 1]]) as tf.Tensor2D
    const r = run(config({ epsilon: 0.2, epsilonHigh: 0.28, lossType: "dapo", tisCap: 3 }), { ...input(), isWeights: w() })
    expect(r.loss).toBeCloseTo((-0.5 - 2.56 - 0.5 + 1.1 + 2.4) / 5, 6)
    close(r.grad, [-0.5 / 5, 0, -0.5 / 5, 1.1 / 5, 0, 0])
  })

  it("entropy bonus: −c · H per counted token under the same aggregation, gradient −c/Σ m on H", () => {
    const c = config({ epsilon: 0.2, epsilonHigh: 0.28, lossType: "dapo", entropyCoef: 0.1 })
    const [loss, grad] = tidy(() => {
      const x = input()
      const f = (h: tf.Tensor) => Loss.compute({ ...x, entropy: h as tf.Tensor2D }, c).loss
      return [Loss.compute({ ...x, entropy: entropy() }, c).loss.dataSync()[0], Array.from(tf.grad(f)(entropy()).dataSync())] as const
    })
    expect(loss).toBeCloseTo((-0.88 - 0.1 * (1 + 2 + 3 + 4 + 5)) / 5, 6)
    close(grad, [-0.02, -0.02, -0.02, -0.02, -0.02, 0])
    const grpo = tidy(() => Loss.compute({ ...input(), entropy: entropy() }, config({ epsilon: 0.2, epsilonHigh: 0.28, entropyCoef: 0.1 })).loss.dataSync()[0])
    expect(grpo).toBeCloseTo(((-2.78 - 0.6) / 3 + (1.9 - 0.9) / 2) / 2, 6)
    expect(() => run(c)).toThrow(/entropy/)
  })

  it("top-entropy quantile: the policy term of the top ⌈q · Σ m⌉ counted tokens only; the denominator stays Σ m", () => {
    const withH = (q: number) => run(config({ epsilon: 0.2, epsilonHigh: 0.28, lossType: "dapo", entropyTopQuantile: q }), { ...input(), entropy: entropy() })
    // counted entropies 1..5 (6 is masked): q = 0.4 keeps {5, 4} (row 1), q = 0.5 keeps {5, 4, 3}
    expect(withH(0.4).loss).toBeCloseTo((1.1 + 0.8) / 5, 6)
    close(withH(0.4).grad, [0, 0, 0, 1.1 / 5, 0, 0])
    expect(withH(0.5).loss).toBeCloseTo((1.1 + 0.8 - 0.5) / 5, 6)
    expect(withH(1).loss).toBeCloseTo(-0.88 / 5, 6)
    // ties at the threshold are all kept: entropies [1, 2, 2 | 2, 5], q = 0.4 → threshold 2 → four tokens
    const ties = run(config({ epsilon: 0.2, epsilonHigh: 0.28, lossType: "dapo", entropyTopQuantile: 0.4 }), { ...input(), entropy: tf.tensor2d([[1, 2, 2], [2, 5, 9]]) as tf.Tensor2D })
    expect(ties.loss).toBeCloseTo((-1.28 - 0.5 + 1.1 + 0.8) / 5, 6)
    expect(() => config({ entropyTopQuantile: 0 })).toThrow()
  })
})
