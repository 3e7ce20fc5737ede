/** The question is user data: the chain of thought starts at the template's own prefix, never at a `<think>` in the question. */
import { Conformance, Plugin, Reward } from "@r1flow/core"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import plugin from "../src/index.js"

const english = () => Effect.runPromise(Plugin.instantiate(plugin, { language: "en" }, "config"))
const completion = "compute it</think><answer>这是答案</answer>"

describe("language consistency reads the completion, not the question", () => {
  it("a question ending in a literal <think> scores as the same question without it", async () => {
    const reward = await english()
    const [withTag] = await Conformance.score(reward, [{ prompt: "Explain <think>", completion }])
    const [without] = await Conformance.score(reward, [{ prompt: "Explain", completion }])
    expect(withTag).toBe(without)
    expect(without).toBeLessThan(1) // the whole completion counts, its Chinese answer included
  })

  it("the template's own <think> prefix makes the text before </think> the chain of thought", async () => {
    const input = Reward.withSignal(Reward.inputFromBatch(Conformance.makeBatch([{ prompt: "Explain", completion }], { completionPrefix: "<think>" })))
    expect(Array.from(await (await english()).score(input))).toEqual([1])
  })
})
