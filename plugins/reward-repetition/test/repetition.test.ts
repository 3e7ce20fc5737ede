import { fileURLToPath } from "node:url"
import { Conformance, Plugin } from "@r1flow/core"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import plugin, { Repetition } from "../src/index.js"

const reward = (config: Record<string, unknown> = {}) => Effect.runSync(Plugin.instantiate(plugin, config, "config"))
const score = (completions: Array<string>, config?: Record<string, unknown>) => Conformance.score(reward(config), completions.map((completion) => ({ completion })))

describe("repetition penalty", () => {
  it("is 0 without repeats and grows with them, scaled by maxPenalty", async () => {
    const out = await score(["the cat sat on the mat", "a b c a b c a b c", "go go go go go go", "too short", "", "A b C a B c"])
    // "a b c a b c a b c": 7 trigrams, 3 distinct; "go" × 6: 4 trigrams, 1 distinct; case-insensitive.
    expect(out).toEqual([0, -(1 - 3 / 7), -(1 - 1 / 4), 0, 0, -(1 - 3 / 4)].map(Math.fround))
    expect(await score(["go go go go go go"], { maxPenalty: -0.5, ngram: 2 })).toEqual([Math.fround(-0.5 * (1 - 1 / 5))])
  })

  it("counts words split on any whitespace", () => {
    expect(Repetition.repeatedFraction("x\ny\tx  y", 1)).toBe(0.5)
  })

  it("rejects a positive maxPenalty and a zero n", async () => {
    const err = await Effect.runPromise(Effect.flip(Plugin.instantiate(plugin, { maxPenalty: 1 }, "rewards[3].config")))
    expect(err.message).toContain("rewards[3].config.maxPenalty")
    expect((await Effect.runPromise(Effect.flip(Plugin.instantiate(plugin, { ngram: 0 }, "c")))).message).toContain("c.ngram")
  })

  it("1e6-character outputs", async () => {
    const loop = "I will try again. ".repeat(60_000)
    const fresh = Array.from({ length: 120_000 }, (_, i) => `w${i}`).join(" ")
    const out = await score([loop, fresh])
    expect(out[0]).toBeLessThan(-0.99)
    expect(out[1]).toBe(0)
  })

  it("passes the conformance suite", async () => {
    for (const r of await Conformance.run(plugin)) expect(r.ok, `${r.check}: ${r.detail}`).toBe(true)
  })

  it("loads through the plugin registry", async () => {
    const loaded = await Effect.runPromise(Plugin.load(fileURLToPath(new URL("../src/index.ts", import.meta.url)), { kind: "reward" }))
    expect(loaded.name).toBe("repetition")
  })
})
