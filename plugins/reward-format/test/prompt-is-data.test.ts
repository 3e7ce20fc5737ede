/** The question is user data: only the completion (and the prefix the template itself opened it with) is scored. */
import { Batch, Conformance, Plugin, Reward } from "@r1flow/core"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import plugin from "../src/index.js"

const strict = () => Effect.runPromise(Plugin.instantiate(plugin, { mode: "strict" }, "config"))
const completion = "reasoning</think><answer>4</answer>"

describe("format reads the completion, not the question", () => {
  it("a question ending in a literal <think> does not open the block", async () => {
    expect(await Conformance.score(await strict(), [{ prompt: "What is 2+2? <think>", completion }])).toEqual([0])
    expect(await Conformance.score(await strict(), [{ prompt: "What is 2+2? <think>", completion: `<think>${completion}` }])).toEqual([1])
  })

  it("the template's own prefix, recorded on the batch, does open it", async () => {
    const batch = Conformance.makeBatch([{ prompt: "What is 2+2?", completion }], { completionPrefix: "<think>" })
    expect(Batch.completionPrefix(batch.schema)).toBe("<think>")
    const input = Reward.withSignal(Reward.inputFromBatch(batch))
    expect(input.completionPrefix).toBe("<think>")
    expect(Array.from(await (await strict()).score(input))).toEqual([1])
  })
})
