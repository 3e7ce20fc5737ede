import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { RecordBatch } from "apache-arrow"
import { Effect, Schema } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import * as Columns from "../src/Columns.js"
import * as Conformance from "../src/Conformance.js"
import type * as Reward from "../src/Reward.js"
import * as RewardStage from "../src/RewardStage.js"
import { run } from "./helpers.js"

// Two tasks interleaved, with one row of no task at all: the routing must follow each row's own tag.
const tasks = ["arith", "cd", "arith", null, "cd", "arith"] as const
const rows: Array<Conformance.Row> = tasks.map((task, i) => ({
  prompt: `p${i >> 1}`,
  completion: "x".repeat(i + 1),
  answer: String(i),
  metadata: task === null ? { other: 1 } : { task, n: i },
  groupId: 10 + (i >> 1),
  id: `id-${i}`
}))

const values = (batch: RecordBatch, column: string) => Array.from(Columns.float32Values(batch.getChild(column) as any))

/** What a reward saw on each call: ids, group ids, the tasks, and an earlier reward's column. */
interface Seen {
  readonly ids: Array<string>
  readonly groups: Array<number>
  readonly tasks: Array<unknown>
  readonly before: Array<number> | null
  readonly rows: number
}

/** A reward recording each call; it scores a row by its completion's length plus 100 × its `metadata.n`. */
const recording = (name: string, calls: Array<Seen>): Reward.Reward => ({
  name,
  version: "1.0.0",
  score: (input) => {
    const ids = input.batch.getChild("id")!
    const before = input.batch.getChild("reward_first")
    calls.push({
      ids: Array.from({ length: input.rows }, (_, i) => String(ids.get(i))),
      groups: Array.from(input.groupIds),
      tasks: input.metadata.map((m) => m.task),
      before: before === null ? null : Array.from(Columns.float32Values(before as any)),
      rows: input.rows
    })
    return Float32Array.from(input.completions, (c, i) => c.length + 100 * Number(input.metadata[i].n ?? 0))
  }
})

// The independent reference: each row's expected score by its tag alone.
const expected = (own: ReadonlyArray<string>) =>
  tasks.map((t, i) => (t !== null && own.includes(t) ? i + 1 + 100 * i : NaN))

describe("RewardStage: rewards routed by task", () => {
  it("a reward declared for one task is called on that task's rows only, NaN elsewhere", async () => {
    const first: Array<Seen> = []
    const second: Array<Seen> = []
    const stage = RewardStage.make([
      { reward: recording("first", first), tasks: ["arith"], weight: 2 },
      { reward: recording("second", second), tasks: ["cd"] }
    ])
    const out = await run(stage.run(Conformance.makeBatch(rows)))
    expect(first).toHaveLength(1)
    expect(first[0].tasks).toEqual(["arith", "arith", "arith"])
    expect(first[0].ids).toEqual(["id-0", "id-2", "id-5"])
    expect(first[0].groups).toEqual([10, 11, 12])
    expect(second).toHaveLength(1)
    expect(second[0].tasks).toEqual(["cd", "cd"])
    expect(second[0].ids).toEqual(["id-1", "id-4"])
    // The earlier reward's column, cut to the same rows as the batch it came with.
    expect(second[0].before).toEqual([NaN, NaN])
    expect(values(out, "reward_first")).toEqual(expected(["arith"]))
    expect(values(out, "reward_second")).toEqual(expected(["cd"]))
    // Total: Σ w·r over the rewards that apply; the untagged row has none, so it is NaN.
    const total = tasks.map((t, i) => (t === "arith" ? 2 * (i + 1 + 100 * i) : t === "cd" ? i + 1 + 100 * i : NaN))
    expect(values(out, "reward")).toEqual(total)
  })

  it("a later routed reward sees the earlier column's values on its own rows", async () => {
    const calls: Array<Seen> = []
    const stage = RewardStage.make([
      { reward: recording("first", []), tasks: ["arith", "cd"] },
      { reward: recording("second", calls), tasks: ["cd"] }
    ])
    await run(stage.run(Conformance.makeBatch(rows)))
    // Rows 1 and 4 (cd): first scored them 2 + 100 and 5 + 400.
    expect(calls[0].before).toEqual([2 + 100, 5 + 400])
  })

  it("a batch holding none of its tasks' rows skips the call; no tasks scores every row", async () => {
    const routed: Array<Seen> = []
    const all: Array<Seen> = []
    const stage = RewardStage.make([
      { reward: recording("first", all) },
      { reward: recording("second", routed), tasks: ["gsm8k"] }
    ])
    const out = await run(stage.run(Conformance.makeBatch(rows)))
    expect(routed).toHaveLength(0)
    expect(values(out, "reward_second").every((v) => Number.isNaN(v))).toBe(true)
    expect(all[0].rows).toBe(rows.length)
    expect(values(out, "reward")).toEqual(tasks.map((_, i) => i + 1 + 100 * (tasks[i] === null ? 0 : i)))
  })

  it("a failure under onError nan names the routed row's id and NaNs only its task's rows", async () => {
    const infiniteOnSecond: Reward.Reward = { name: "bad", version: "1.0.0", score: () => new Float32Array([1, Infinity]) }
    const stage = RewardStage.make([{ reward: infiniteOnSecond, tasks: ["cd"], onError: "nan" }])
    const out = await run(stage.run(Conformance.makeBatch(rows)))
    expect(values(out, "reward_bad")).toEqual(tasks.map((t, i) => (i === 1 ? 1 : NaN)))
    expect(stage.failures().bad.last).toContain(`"id-4"`)
  })

  it("decodes tasks as a non-empty list of names", () => {
    const decode = Schema.decodeUnknownSync(RewardStage.Config)
    expect(decode({ rewards: [{ plugin: "x", tasks: ["cd"] }] }).rewards[0].tasks).toEqual(["cd"])
    expect(() => decode({ rewards: [{ plugin: "x", tasks: [] }] })).toThrow()
    expect(() => decode({ rewards: [{ plugin: "x", tasks: [3] }] })).toThrow()
  })
})

describe("RewardStage.load: routing in a worker thread", () => {
  const dir = mkdtempSync(join(tmpdir(), "r1flow-routing-"))
  const stages: Array<RewardStage.RewardStage> = []
  afterAll(async () => {
    for (const s of stages) await Effect.runPromise(s.close)
  })

  it("a worker reward declared for a task never sees another task's rows", async () => {
    const effectUrl = import.meta.resolve("effect")
    // Scores 1 on its own task's rows and fails the call (a throw) on any other row it is given.
    writeFileSync(
      join(dir, "only-cd.mjs"),
      `import { Schema } from ${JSON.stringify(effectUrl)}
       export default { kind: "reward", name: "only-cd", version: "1.0.0", description: "test", config: Schema.Struct({}),
         make: () => ({ score: (input) => { if (input.metadata.some((m) => m.task !== "cd")) throw new Error("saw a row of " + JSON.stringify(input.metadata)); return new Float32Array(input.rows).fill(1) } }) }`
    )
    const stage = await run(RewardStage.load(Schema.decodeUnknownSync(RewardStage.Config)({ rewards: [{ plugin: "./only-cd.mjs", tasks: ["cd"] }] }), { from: dir }))
    stages.push(stage)
    const out = await run(stage.run(Conformance.makeBatch(rows)))
    expect(values(out, "reward_only-cd")).toEqual(tasks.map((t) => (t === "cd" ? 1 : NaN)))
  })
})
