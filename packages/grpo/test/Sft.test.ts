import { Backend } from "@r1flow/backend"
import { Rng } from "@r1flow/core"
import { LogProbs } from "@r1flow/model"
import * as tf from "@tensorflow/tfjs"
import { Effect, Schema, type Scope } from "effect"
import { beforeAll, describe, expect, it } from "vitest"
import { Metrics, Sft } from "../src/index.js"
import { maxAbsDiff, sftBatch, snapshot, tiny, V } from "./model.js"

const config = (c: Record<string, unknown>) => Schema.decodeUnknownSync(Sft.Config)(c)
const run = <A, E>(e: Effect.Effect<A, E, Scope.Scope>) => Effect.runPromise(Effect.scoped(e))

beforeAll(async () => {
  await Backend.init()
})

describe("Sft", () => {
  const prompts = [[1, 2, 3], [4], [5, 6]]
  const completions = [[7, 1], [2, 3, 4], [6]]

  it("the loss is the token-mean cross-entropy of completion tokens only (prompt tokens masked)", async () => {
    const policy = tiny()
    // by hand: prompt ++ completion, right-padded to T = 5; the mask marks positions whose *next* token is a completion token
    const tok = Sft.tokens(sftBatch(prompts, completions), 0)
    expect(tok.time).toBe(5)
    expect(Array.from(tok.mask)).toEqual([0, 0, 1, 1, /**/ 1, 1, 1, 0, /**/ 0, 1, 0, 0])
    const lp5 = tf.tidy(() => LogProbs.tokenLogProbs(policy, tf.tensor2d(tok.ids, [3, 5], "int32")).logprobs.arraySync())
    const expected = -(lp5[0][2] + lp5[0][3] + lp5[1][0] + lp5[1][1] + lp5[1][2] + lp5[2][1]) / 6
    const m = await run(Effect.gen(function*() {
      const t = yield* Sft.make(policy, config({ optimizer: { learningRate: 1e-3 } }), Rng.make(1, "mb"))
      return yield* t.step(sftBatch(prompts, completions))
    }))
    expect(m[Metrics.loss]).toBeCloseTo(expected, 5)
    expect(m[Metrics.loss]).toBeCloseTo(Math.log(V), 1) // fresh policy: near uniform
    expect(m[Metrics.numTokens]).toBe(6)
    policy.dispose()
  })

  it("gradient accumulation gives the one-batch update", async () => {
    const a = tiny(), b = tiny()
    const smooth = { learningRate: 1, epsilon: 1, weightDecay: 0, maxGradNorm: 0 }
    await run(Effect.gen(function*() {
      const ta = yield* Sft.make(a, config({ optimizer: smooth }), Rng.make(1, "mb"))
      const tb = yield* Sft.make(b, config({ optimizer: smooth, microBatchSize: 1 }), Rng.make(1, "mb"))
      yield* ta.step(sftBatch(prompts, completions))
      yield* tb.step(sftBatch(prompts, completions))
    }))
    expect(maxAbsDiff(snapshot(a), snapshot(b))).toBeLessThan(1e-5)
    a.dispose()
    b.dispose()
  })

  it("learns a mapping (answer the parity of the first prompt token) and shares the guard", async () => {
    const policy = tiny(3)
    const data = Rng.make(3, "data")
    const batch = () => {
      const ps = Array.from({ length: 32 }, () => Array.from({ length: 3 }, () => 2 + data.nextInt(V - 2)))
      return sftBatch(ps, ps.map((p) => [p[0] % 2]))
    }
    const losses = await run(Effect.gen(function*() {
      const t = yield* Sft.make(policy, config({ optimizer: { learningRate: 1e-2, weightDecay: 0 }, miniBatchSize: 16 }), Rng.make(3, "mb"))
      const out: Array<number> = []
      for (let s = 0; s < 40; s++) out.push((yield* t.step(batch()))[Metrics.loss])
      expect(t.guard.skipped()).toBe(0)
      return out
    }))
    expect(losses[0]).toBeGreaterThan(1.5)
    expect(losses.slice(-5).reduce((a, b) => a + b) / 5).toBeLessThan(0.1)
    policy.dispose()
  })
})
