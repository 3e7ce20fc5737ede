import { Backend } from "@r1flow/backend"
import { Batch, Columns, Rng } from "@r1flow/core"
import { Effect } from "effect"
import { beforeAll, describe, expect, it } from "vitest"
import { Generate, LogProbs, Rollout } from "../src/index.js"
import { randomModel, tiny } from "./helpers.js"

beforeAll(async () => {
  await Backend.init()
})

const prompts = () =>
  Batch.fromData(Batch.Prompts, {
    id: Columns.makeUtf8(["q1", "q2"]),
    group_id: Columns.makeInt32(new Int32Array([10, 11])),
    prompt: Columns.makeUtf8(["one two", "three"]),
    prompt_ids: Columns.int32ListFromRows([[1, 2, 3], [4]]),
    answer: Columns.makeUtf8(["2", null]),
    metadata: Columns.makeUtf8([null, "{\"k\":1}"])
  })

const decode = (ids: Int32Array) => Array.from(ids, (i) => `t${i}`).join(" ")

describe("Rollout.stage", () => {
  it("turns each prompt into G rollouts with the sampler's tokens, log-probs and finish reasons", async () => {
    const m = randomModel(tiny, 1, 0.5)
    const options = { groupSize: 3, maxNewTokens: 6, temperature: 1, stopIds: [0, 5], decode }
    const stage = Rollout.stage(m, { ...options, rng: Rng.make(4, "rollout") })
    const out = await Effect.runPromise(stage.run(prompts()))
    expect(out.schema.fields.map((f) => f.name)).toEqual(Batch.Rollouts.fields.map((f) => f.name))
    expect(out.numRows).toBe(6)
    const col = (name: string): Array<any> => Array.from({ length: 6 }, (_, i) => (out as any).getChild(name).get(i))
    expect(col("id")).toEqual(["q1#0", "q1#1", "q1#2", "q2#0", "q2#1", "q2#2"])
    expect(col("group_id")).toEqual([10, 10, 10, 11, 11, 11])
    expect(col("answer")).toEqual(["2", "2", "2", null, null, null])
    expect(col("metadata")[4]).toBe("{\"k\":1}")
    expect(col("prompt_length")).toEqual([3, 3, 3, 1, 1, 1])
    // Same stream state → the same draws as calling the sampler directly.
    const direct = await Generate.sample(m, { ...options, prompts: [Int32Array.from([1, 2, 3]), Int32Array.from([4])] }, Rng.make(4, "rollout"))
    const ids = Columns.int32List(out.getChild("completion_ids")!)
    const lps = Columns.float32List(out.getChild("logprobs")!)
    for (let r = 0; r < 6; r++) {
      const c = Columns.row(ids, r)
      expect(Array.from(c)).toEqual(Array.from(direct.completions[r]))
      expect(Array.from(Columns.row(lps, r))).toEqual(Array.from(direct.logprobs[r]))
      expect(col("finish_reason")[r]).toBe(direct.finishReasons[r])
      expect(col("completion_length")[r]).toBe(c.length)
      const shown = direct.finishReasons[r] === "stop" ? c.subarray(0, c.length - 1) : c
      expect(col("completion")[r]).toBe(decode(shown))
    }
    // The batch feeds straight into the trainer's padded batch.
    const b = LogProbs.completionBatch(out, 0)
    expect(b.mask.reduce((s, x) => s + x, 0)).toBe(col("completion_length").reduce((s: number, x: number) => s + x, 0))
    m.dispose()
  })

  it("fails with a StageError naming the stage on a batch that is not prompts", async () => {
    const m = randomModel(tiny, 2)
    const stage = Rollout.stage(m, { groupSize: 2, maxNewTokens: 2, temperature: 1, stopIds: [], decode, rng: Rng.make(1, "r") })
    const bad = Batch.fromData(Batch.Prompts, { ...Object.fromEntries(Batch.Prompts.fields.map((f) => [f.name, (prompts() as any).getChild(f.name)])), prompt_ids: Columns.int32ListFromRows([[], [4]]) })
    const err = await Effect.runPromise(Effect.flip(stage.run(bad)))
    expect(err).toMatchObject({ _tag: "StageError", stage: "rollout", message: expect.stringMatching(/prompt 0 is empty/) })
    m.dispose()
  })
})
