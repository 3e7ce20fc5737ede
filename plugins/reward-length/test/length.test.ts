import { fileURLToPath } from "node:url"
import { Batch, Columns, Conformance, Plugin, Reward, RewardStage, Stage } from "@r1flow/core"
import { Field, Float32, RecordBatch, Schema as ArrowSchema } from "apache-arrow"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import plugin, { Length } from "../src/index.js"

const make = (config: Record<string, unknown>) => Effect.runSync(Plugin.instantiate(plugin, config, "config"))

/** Adds `reward_math-accuracy` with `values` (a stand-in for the accuracy reward listed before). */
const withCorrectness = (values: ArrayLike<number>) => (batch: RecordBatch) =>
  Effect.runSync(
    Stage.addColumns("test", batch, new ArrowSchema([new Field("reward_math-accuracy", new Float32(), true)]), {
      "reward_math-accuracy": Columns.makeFloat32(Float32Array.from({ length: batch.numRows }, (_, i) => values[i % values.length]))
    })
  )

const score = (config: Record<string, unknown>, rows: Array<Conformance.Row>, correct?: Array<number>) => {
  const batch = Conformance.makeBatch(rows)
  const input = Reward.withSignal(Reward.inputFromBatch(correct === undefined ? batch : withCorrectness(correct)(batch)))
  return Promise.resolve(make(config).score(input)).then((out) => Array.from(out))
}

const tokens = (n: number, finishReason: "stop" | "length" = "stop"): Conformance.Row => ({ completion: "x", completionIds: new Array(n).fill(1), finishReason })

describe("Length equations", () => {
  it("cosine goes from the value at zero to the value at max", () => {
    expect(Length.cosine(0, 100, 2, 1)).toBeCloseTo(2)
    expect(Length.cosine(50, 100, 2, 1)).toBeCloseTo(1.5)
    expect(Length.cosine(100, 100, 2, 1)).toBeCloseTo(1)
    expect(Length.cosine(0, 100, -10, 0)).toBeCloseTo(-10)
    expect(Length.cosine(100, 100, -10, 0)).toBeCloseTo(0)
  })

  it("DAPO soft overlong: 0, then linear down to -1, then -1", () => {
    expect([0, 75, 80, 90, 100, 101].map((l) => Length.overlong(l, 100, 20))).toEqual([0, 0, 0, -0.5, -1, -1])
  })
})

describe("length reward", () => {
  it("cosine: short correct answers score highest, long wrong ones least badly, truncated ones `exceed`", async () => {
    const out = await score({ maxLength: 100 }, [tokens(0), tokens(50), tokens(0), tokens(100), tokens(30, "length"), tokens(10)], [1, 1, 0, 0, 1, NaN])
    expect(out[0]).toBeCloseTo(2)
    expect(out[1]).toBeCloseTo(1.5)
    expect(out[2]).toBeCloseTo(-10)
    expect(out[3]).toBeCloseTo(-10) // L = maxLength counts as exceeding
    expect(out[4]).toBeCloseTo(-10)
    expect(out[5]).toBeNaN()
  })

  it("overlong: DAPO penalty with the default buffer of maxLength / 4", async () => {
    expect(await score({ mode: "overlong", maxLength: 100 }, [tokens(10), tokens(75), tokens(90), tokens(100), tokens(150)])).toEqual([0, 0, -0.6, -1, -1].map(Math.fround))
  })

  it("cosine without the correctness column is a clear error; bad configs are config errors", async () => {
    await expect((async () => score({ maxLength: 100 }, [tokens(1)]))()).rejects.toThrow(/reward_math-accuracy/)
    const missing = await Effect.runPromise(Effect.flip(Plugin.instantiate(plugin, {}, "rewards[2].config")))
    expect(missing.message).toContain("rewards[2].config.maxLength")
    const buffer = await Effect.runPromise(Effect.flip(Plugin.instantiate(plugin, { mode: "overlong", maxLength: 10, buffer: 10 }, "c")))
    expect(buffer.message).toContain("buffer (10) must be less than maxLength (10)")
  })

  it("in a reward stage, reads the column of the accuracy reward listed before it", async () => {
    const accuracy: Reward.Reward = { name: "math-accuracy", version: "1.0.0", score: (input) => Float32Array.from(input.answers, (a) => (a === "ok" ? 1 : 0)) }
    const stage = RewardStage.make([{ reward: accuracy, weight: 0 }, { reward: make({ maxLength: 100 }) }])
    const out = await Effect.runPromise(stage.run(Conformance.makeBatch([{ ...tokens(0), answer: "ok" }, { ...tokens(100), answer: "no" }, { ...tokens(0), answer: "no" }])))
    expect(Array.from(Columns.float32Values(out.getChild(Batch.rewardColumn("length"))!))).toEqual([2, -10, -10])
    expect(Array.from(Columns.float32Values(out.getChild("reward")!))).toEqual([2, -10, -10])
  })

  it("passes the conformance suite (both modes)", async () => {
    for (const r of await Conformance.run(plugin, { config: { maxLength: 4096 }, prepare: withCorrectness([1, 0, NaN]) })) expect(r.ok, `${r.check}: ${r.detail}`).toBe(true)
    for (const r of await Conformance.run(plugin, { config: { mode: "overlong", maxLength: 4096 } })) expect(r.ok, `${r.check}: ${r.detail}`).toBe(true)
  })

  it("loads through the plugin registry", async () => {
    const loaded = await Effect.runPromise(Plugin.load(fileURLToPath(new URL("../src/index.ts", import.meta.url)), { kind: "reward" }))
    expect(loaded.name).toBe("length")
  })
})
