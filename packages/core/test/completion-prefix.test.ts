/**
 * The template's completion prefix (`<think>` when the prompt ends inside the reasoning block) reaches
 * every reward as `input.completionPrefix`, from the batch's schema metadata: in this thread and in a
 * reward's worker. The question text is never its source.
 */
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Schema } from "effect"
import { describe, expect, it } from "vitest"
import * as Batch from "../src/Batch.js"
import * as Columns from "../src/Columns.js"
import * as Conformance from "../src/Conformance.js"
import * as Reward from "../src/Reward.js"
import * as RewardStage from "../src/RewardStage.js"
import { run } from "./helpers.js"

const rows: Array<Conformance.Row> = [{ prompt: "ends with <think>", completion: "a" }, { prompt: "plain", completion: "b" }]
const prefixLength: Reward.Reward = { name: "prefix", version: "1.0.0", score: (input) => new Float32Array(input.rows).fill(input.completionPrefix.length) }
const scores = (batch: any) => Array.from(Columns.float32Values(batch.getChild("reward_prefix")))

describe("completion prefix", () => {
  it("is empty unless the batch records one, whatever the question ends with", () => {
    expect(Reward.inputFromBatch(Conformance.makeBatch(rows)).completionPrefix).toBe("")
    const stamped = Conformance.makeBatch(rows, { completionPrefix: "<think>" })
    expect(stamped.schema.metadata.get(Batch.COMPLETION_PREFIX_KEY)).toBe("<think>")
    expect(Reward.inputFromBatch(stamped).completionPrefix).toBe("<think>")
    expect(Batch.completionPrefix(Batch.withCompletionPrefix(Batch.Prompts, "<think>"))).toBe("<think>")
    expect(Batch.withCompletionPrefix(Batch.Prompts, "")).toBe(Batch.Prompts)
  })

  it("reaches an in-process reward and a worker reward", async () => {
    const inProcess = RewardStage.make([{ reward: prefixLength }])
    expect(scores(await run(inProcess.run(Conformance.makeBatch(rows, { completionPrefix: "<think>" }))))).toEqual([7, 7])
    const dir = mkdtempSync(join(tmpdir(), "r1flow-prefix-"))
    writeFileSync(join(dir, "prefix.mjs"), `import { Schema } from ${JSON.stringify(import.meta.resolve("effect"))}
export default { kind: "reward", name: "prefix", version: "1.0.0", description: "prefix length", config: Schema.Struct({}),
  make: () => ({ score: (input) => new Float32Array(input.rows).fill(input.completionPrefix.length) }) }`)
    const config = Schema.decodeUnknownSync(RewardStage.Config)({ rewards: [{ plugin: "./prefix.mjs" }] })
    const worker = await run(RewardStage.load(config, { from: dir }))
    try {
      expect(scores(await run(worker.run(Conformance.makeBatch(rows, { completionPrefix: "<think>" }))))).toEqual([7, 7])
      expect(scores(await run(worker.run(Conformance.makeBatch(rows))))).toEqual([0, 0])
    } finally {
      await Effect.runPromise(worker.close)
    }
  }, 30_000)
})
