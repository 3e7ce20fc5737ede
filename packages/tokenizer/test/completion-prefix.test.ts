import { Batch, Columns } from "@r1flow/core"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { Template, Tokenize, Tokenizer } from "../src/index.js"

const tasks = Batch.fromData(Tokenize.TaskRows, {
  id: Columns.makeUtf8(["a", "b"]),
  prompt: Columns.makeUtf8(["What is 2+2? <think>", "3+3?"]),
  answer: Columns.makeUtf8(["4", "6"]),
  metadata: Columns.makeUtf8(["{}", "{}"])
})

describe("the template's completion prefix", () => {
  it("is <think> exactly when the template opens the block, and toPrompts records it on the prompts batch", async () => {
    expect(Template.completionPrefix({})).toBe("")
    expect(Template.completionPrefix({ startThink: true })).toBe("<think>")
    const run = (options: Template.PromptOptions) =>
      Effect.runPromise(Effect.provide(Tokenize.toPrompts({ template: "r1-zero", ...options }).run(tasks), Tokenizer.layerStandard("cl100k_base")))
    expect(Batch.completionPrefix((await run({ startThink: true })).schema)).toBe("<think>")
    // The first question ends in a literal <think>: data, not a prefix.
    expect(Batch.completionPrefix((await run({})).schema)).toBe("")
  })
})
