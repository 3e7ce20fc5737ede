import { Effect, Schema } from "effect"
import { describe, expect, it } from "vitest"
import { Guard } from "../src/index.js"

describe("Guard", () => {
  it("skips non-finite steps, counts them, and stops after N in a row naming the step and the last good metrics", async () => {
    const g = Guard.make(Schema.decodeUnknownSync(Guard.Config)({ maxConsecutiveSkips: 2 }))
    const run = <A, E>(e: Effect.Effect<A, E>) => Effect.runPromise(e)
    expect(await run(g.check(0, { loss: 1, gradNorm: 2 }))).toBe(true)
    g.good(0, { loss: 1, grad_norm: 2 })
    expect(await run(g.check(1, { loss: NaN, gradNorm: 2 }))).toBe(false)
    expect(await run(g.check(2, { loss: 1, gradNorm: 3 }))).toBe(true)
    g.good(2, { loss: 0.5, grad_norm: 3 })
    expect(await run(g.check(3, { loss: 1, gradNorm: Infinity }))).toBe(false)
    expect(g.consecutive()).toBe(1)
    const err = await run(Effect.flip(g.check(4, { loss: -Infinity, gradNorm: NaN })))
    expect(err._tag).toBe("NonFiniteError")
    expect(err.step).toBe(4)
    expect(err.lastGoodStep).toBe(2)
    expect(err.lastGoodMetrics).toEqual({ loss: 0.5, grad_norm: 3 })
    expect(err.message).toContain("step 4")
    expect(err.message).toContain("last good step 2: loss=0.5, grad_norm=3")
    expect(g.skipped()).toBe(3)
  })
})
