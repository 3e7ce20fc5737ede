/**
 * A reward's worker is bounded in all its memory, not only its JS heap: a reward that hoards
 * ArrayBuffers (outside V8's heap limit) is stopped when the worker grows past its limit during a
 * call, the call fails like a throw (its onError applies), the worker is replaced, and this process
 * (the trainer's) carries on.
 */
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Schema } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import * as Columns from "../src/Columns.js"
import * as Conformance from "../src/Conformance.js"
import * as RewardStage from "../src/RewardStage.js"
import { run, runFail } from "./helpers.js"

const dir = mkdtempSync(join(tmpdir(), "r1flow-offheap-"))
const plugin = (file: string, score: string) => {
  writeFileSync(join(dir, file), `import { Schema } from ${JSON.stringify(import.meta.resolve("effect"))}
export default { kind: "reward", name: "hoard", version: "1.0.0", description: "test", config: Schema.Struct({}), make: () => ({ score: ${score} }) }`)
  return `./${file}`
}
// On a batch with an empty completion, 1 MB buffers are kept forever: written to (resident) or only allocated.
const hoard = (fill: string) =>
  `(input) => { if (input.completions.includes("")) { const kept = []; for (;;) kept.push(Buffer.alloc(1 << 20${fill})) } return new Float32Array(input.rows).fill(1) }`
const touched = plugin("touched.mjs", hoard(", 7"))
const untouched = plugin("untouched.mjs", hoard(""))

const rows: Array<Conformance.Row> = [{ completion: "a" }, { completion: "" }, { completion: "b" }]
const fine = rows.filter((r) => r.completion !== "")
const scores = (batch: any) => Array.from(Columns.float32Values(batch.getChild("reward_hoard")))
const decode = (raw: unknown) => Schema.decodeUnknownSync(RewardStage.Config)(raw)
const stages: Array<RewardStage.RewardStage> = []
const load = async (spec: string, onError: "nan" | "fail") => {
  const s = await run(RewardStage.load(decode({ rewards: [{ plugin: spec, onError, timeoutMs: 3_000 }] }), { from: dir, memoryMb: 64 }))
  stages.push(s)
  return s
}
afterAll(async () => {
  for (const s of stages) await Effect.runPromise(s.close)
})

describe("off-heap memory of a reward's worker", () => {
  for (const [kind, spec] of [["written", touched], ["allocated only", untouched]] as const) {
    it(`a reward hoarding ${kind} Buffers is stopped at its limit, like a throw, and its worker replaced`, async () => {
      const stage = await load(spec, "nan")
      // Its 3 s timeout only bounds the damage should the limit fail: the message says which stopped it.
      const out = await run(stage.run(Conformance.makeBatch(rows)))
      expect(scores(out).every(Number.isNaN)).toBe(true)
      expect(stage.failures().hoard).toMatchObject({ calls: 1, rows: 3 })
      expect(stage.failures().hoard.last).toMatch(/ran out of memory \(its worker's limit is 64 MB/)
      expect(scores(await run(stage.run(Conformance.makeBatch(fine))))).toEqual([1, 1])
    }, 30_000)
  }

  it("with onError fail the stage fails naming the reward and the memory limit; this process still scores", async () => {
    const stage = await load(touched, "fail")
    const err = await runFail(stage.run(Conformance.makeBatch(rows)))
    expect(err.message).toMatch(/reward "hoard".*ran out of memory \(its worker's limit is 64 MB/)
    expect(scores(await run(stage.run(Conformance.makeBatch(fine))))).toEqual([1, 1])
  }, 30_000)
})
