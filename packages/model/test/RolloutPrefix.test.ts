import { Backend } from "@r1flow/backend"
import { Batch, Columns, Rng } from "@r1flow/core"
import { Effect } from "effect"
import { beforeAll, describe, expect, it } from "vitest"
import { Rollout } from "../src/index.js"
import { randomModel, tiny } from "./helpers.js"

beforeAll(async () => {
  await Backend.init()
})

describe("Rollout", () => {
  it("carries the prompts batch's completion prefix to the rollouts it samples", async () => {
    const prompts = Batch.fromData(Batch.withCompletionPrefix(Batch.Prompts, "<think>"), {
      id: Columns.makeUtf8(["q1"]),
      group_id: Columns.makeInt32(new Int32Array([0])),
      prompt: Columns.makeUtf8(["one"]),
      prompt_ids: Columns.int32ListFromRows([[1, 2]]),
      answer: Columns.makeUtf8(["2"]),
      metadata: Columns.makeUtf8([null])
    })
    const m = randomModel(tiny, 1)
    try {
      const stage = Rollout.stage(m, { groupSize: 2, maxNewTokens: 2, temperature: 0.7, stopIds: [], decode: (ids) => ids.join(" "), rng: Rng.make(1, "r") })
      const out = await Effect.runPromise(stage.run(prompts))
      expect(Batch.completionPrefix(out.schema)).toBe("<think>")
      expect(Batch.logprobTemperature(out.schema)).toBe(0.7)
    } finally {
      m.dispose()
    }
  })
})
