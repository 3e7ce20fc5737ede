import { Batch, Columns } from "@r1flow/core"
import { scored } from "./fixtures.js"
import { Effect, Schema } from "effect"
import { describe, expect, it } from "vitest"
import { Advantages, Metrics } from "../src/index.js"

const config = (c: Partial<Advantages.Config> = {}) => Schema.decodeUnknownSync(Advantages.Config)(c)
const std3 = Math.sqrt(1 / 3) // unbiased std of {1, 0, 1, 0} and of {1, 0, 0}

// group 0: {1, 0, 1, 0}; group 1: {1, 1, 1, 1} (zero variance); group 2: {1, NaN, 0, 0}
const rewards = Float32Array.from([1, 0, 1, 0, 1, 1, 1, 1, 1, NaN, 0, 0])
const groups = Int32Array.from([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])

describe("Advantages.compute", () => {
  it("group scaling: (r − mean_g) / (std_g + ε), NaN rows and zero-variance groups get 0 and are counted", () => {
    const eps = 1e-4
    const r = Advantages.compute(rewards, groups, config())
    const a = 0.5 / (std3 + eps)
    const b = 1 / 3 / (std3 + eps)
    const expected = [a, -a, a, -a, 0, 0, 0, 0, 2 * b, 0, -b, -b]
    expected.forEach((e, i) => expect(r.advantages[i]).toBeCloseTo(e, 5))
    expect(r.nanRewards).toBe(1)
    expect(r.zeroStdGroups).toBe(1)
    expect(r.zeroStdGroupIds).toEqual([1])
    expect(r.groups).toBe(3)
  })

  it("batch scaling divides by the std of all finite rewards", () => {
    const r = Advantages.compute(rewards, groups, config({ scaling: "batch", epsilon: 0 }))
    // 11 finite rewards: seven 1s, four 0s → mean 7/11, unbiased var = (7·(4/11)² + 4·(7/11)²)/10 = 28/110
    const s = Math.sqrt(28 / 110)
    expect(r.advantages[0]).toBeCloseTo(0.5 / s, 5)
    expect(r.advantages[8]).toBeCloseTo(2 / 3 / s, 5)
    expect(r.advantages[4]).toBe(0)
    expect(r.advantages[9]).toBe(0)
  })

  it("none (Dr. GRPO) only centres", () => {
    const r = Advantages.compute(rewards, groups, config({ scaling: "none" }))
    expect(Array.from(r.advantages).map((x) => Math.round(x * 1e5) / 1e5)).toEqual([0.5, -0.5, 0.5, -0.5, 0, 0, 0, 0, 0.66667, 0, -0.33333, -0.33333])
  })

  it("rloo: r_i − mean of the group's other finite rewards, unscaled by default; zero-variance groups and NaN rows 0", () => {
    // group 0 {1, 0, 1, 0}: 1 − (1 + 0 + 0)/3 = 2/3, 0 − 2/3; group 2 finite {1, 0, 0}: 1 − 0 = 1, 0 − (1 + 0)/2 = −1/2
    const expected = [2 / 3, -2 / 3, 2 / 3, -2 / 3, 0, 0, 0, 0, 1, 0, -0.5, -0.5]
    const r = Advantages.compute(rewards, groups, config({ estimator: "rloo" }))
    expected.forEach((e, i) => expect(r.advantages[i]).toBeCloseTo(e, 6))
    expect([r.nanRewards, r.zeroStdGroups]).toEqual([1, 1])
    // optionally scaled: by the group's std (both groups' is √(1/3))
    const scaled = Advantages.compute(rewards, groups, config({ estimator: "rloo", scaling: "group", epsilon: 0 }))
    expected.forEach((e, i) => expect(scaled.advantages[i]).toBeCloseTo(e / std3, 5))
  })

  it("reinforce++: whitened over the batch's finite rewards, no group baseline: a zero-variance group keeps its advantage", () => {
    // seven 1s and four 0s: mean 7/11, unbiased std √(28/110)
    const s = Math.sqrt(28 / 110)
    const r = Advantages.compute(rewards, groups, config({ estimator: "reinforce++", epsilon: 0 }))
    const one = (4 / 11) / s, zero = (-7 / 11) / s
    const expected = [one, zero, one, zero, one, one, one, one, one, 0, zero, zero]
    expected.forEach((e, i) => expect(r.advantages[i]).toBeCloseTo(e, 5))
    expect([r.nanRewards, r.zeroStdGroups]).toEqual([1, 1])
    // a batch with no reward variance gives every row 0
    expect(Array.from(Advantages.compute(Float32Array.from([1, 1, NaN]), Int32Array.from([0, 1, 1]), config({ estimator: "reinforce++" })).advantages)).toEqual([0, 0, 0])
  })

  it("reinforce++_baseline: group mean subtracted, then whitened over the batch; zero-variance groups 0", () => {
    // x = [.5, −.5, .5, −.5 | 0 0 0 0 | 2/3, ·, −1/3, −1/3]: mean 0, Σx² = 1 + 6/9 = 5/3, unbiased var (5/3)/10 = 1/6
    const s = Math.sqrt(1 / 6)
    const r = Advantages.compute(rewards, groups, config({ estimator: "reinforce++_baseline", epsilon: 0 }))
    const expected = [0.5 / s, -0.5 / s, 0.5 / s, -0.5 / s, 0, 0, 0, 0, 2 / 3 / s, 0, -1 / 3 / s, -1 / 3 / s]
    // = ±1.224745, 1.632993, −0.816497
    expected.forEach((e, i) => expect(r.advantages[i]).toBeCloseTo(e, 5))
    expect(r.advantages[0]).toBeCloseTo(1.224745, 5)
  })

  it("the reinforce++ estimators refuse scaling, naming the key", () => {
    expect(() => config({ estimator: "reinforce++", scaling: "group" } as never)).toThrow(/whitens over the batch[\s\S]*scaling/)
    expect(config({ estimator: "reinforce++_baseline" }).scaling).toBeUndefined()
  })

  it("a group with one finite reward has zero variance", () => {
    const r = Advantages.compute(Float32Array.from([NaN, 2, NaN]), Int32Array.from([7, 7, 7]), config())
    expect(Array.from(r.advantages)).toEqual([0, 0, 0])
    expect(r.nanRewards).toBe(2)
    expect(r.zeroStdGroupIds).toEqual([7])
  })
})

describe("Advantages.stage", () => {
  it("adds the advantage column and keeps the input's columns; the step's metrics count from the batch", async () => {
    const out = await Effect.runPromise(Advantages.stage(config()).run(scored(rewards, groups)))
    expect(out.schema.fields.map((f) => f.name)).toEqual(Batch.Advantages.fields.map((f) => f.name))
    expect(Columns.float32Values(out.getChild("advantage")!)[0]).toBeCloseTo(0.5 / (std3 + 1e-4), 5)
    // No counts ride in the schema metadata: Metrics.ofBatch reads them from the batch itself.
    expect([...out.schema.metadata.keys()].filter((k) => k.startsWith("r1flow.advantages"))).toEqual([])
    const m = Metrics.ofBatch(out)
    expect([m[Metrics.nanRewards], m[Metrics.fracRewardZeroStd]]).toEqual([1, 1 / 3])
  })

  it("rejects a batch without rewards, naming the column", async () => {
    const err = await Effect.runPromise(Effect.flip(Advantages.stage(config()).run(scored(rewards, groups).select(["id", "group_id"]) as never)))
    expect(err.message).toContain("\"reward\"")
  })
})
