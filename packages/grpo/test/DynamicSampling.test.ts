import { Columns } from "@r1flow/core"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { DynamicSampling } from "../src/index.js"
import { scored } from "./fixtures.js"

const draw = (groups: Array<[number, Array<number>]>) =>
  scored(Float32Array.from(groups.flatMap(([, rs]) => rs)), Int32Array.from(groups.flatMap(([g, rs]) => rs.map(() => g))))

describe("DynamicSampling.accept", () => {
  it("drops equal-reward groups, asks for more until full, then trims to exactly targetGroups", async () => {
    const config = { targetGroups: 2, maxDraws: 3 }
    const first = await Effect.runPromise(DynamicSampling.accept(DynamicSampling.empty, draw([[0, [1, 1, 1]], [1, [1, 0, 0]]]), config))
    expect(first._tag).toBe("More")
    expect(first.state.droppedGroups).toBe(1)
    const second = await Effect.runPromise(DynamicSampling.accept(first.state, draw([[2, [0, NaN, 1]], [3, [0.5, 0, 0]], [4, [NaN, NaN, 2]]]), config))
    expect(second._tag).toBe("Full")
    if (second._tag !== "Full") return
    expect(Array.from(Columns.int32Values(second.batch.getChild("group_id")!))).toEqual([1, 1, 1, 2, 2, 2])
    expect(Array.from(Columns.float32Values(second.batch.getChild("reward")!))).toEqual([1, 0, 0, 0, NaN, 1])
    expect(Array.from(Columns.int32List(second.batch.getChild("completion_ids")!).values)).toEqual([3, 3, 3, 4, 3, 5, 3, 0, 3, 1, 3, 2])
    expect(second.state.droppedGroups).toBe(2) // group 0, and group 4 (one finite reward)
  })

  it("fails with a clear error once maxDraws draws did not fill the batch", async () => {
    const config = { targetGroups: 2, maxDraws: 2 }
    const one = await Effect.runPromise(DynamicSampling.accept(DynamicSampling.empty, draw([[0, [1, 1]], [1, [0, 1]]]), config))
    const err = await Effect.runPromise(Effect.flip(DynamicSampling.accept(one.state, draw([[2, [0, 0]]]), config)))
    expect(err._tag).toBe("DynamicSamplingError")
    if (err._tag !== "DynamicSamplingError") return
    expect(err.message).toContain("2 draws (the cap, maxDraws) gave 1 of 2 groups")
    expect(err.droppedGroups).toBe(2)
  })

  it("refuses a group id seen in an earlier draw", async () => {
    const config = { targetGroups: 3, maxDraws: 5 }
    const one = await Effect.runPromise(DynamicSampling.accept(DynamicSampling.empty, draw([[7, [0, 1]]]), config))
    const err = await Effect.runPromise(Effect.flip(DynamicSampling.accept(one.state, draw([[7, [1, 0]]]), config)))
    expect(err.message).toContain("group id 7")
  })
})

describe("DynamicSampling.fill", () => {
  it("off: the one draw as it is, nothing counted", async () => {
    const attempts: Array<number> = []
    const batch = draw([[0, [1, 1]]])
    const filled = await Effect.runPromise(DynamicSampling.fill(undefined, (a) => Effect.sync(() => { attempts.push(a); return batch })))
    expect(attempts).toEqual([0])
    expect(filled.batch).toBe(batch)
    expect(filled.droppedGroups).toBeUndefined()
  })

  it("on: draws attempt 0, 1, … until targetGroups informative groups, counting the dropped ones", async () => {
    const draws = [draw([[0, [1, 1]], [1, [0, 1]]]), draw([[2, [3, 3]]]), draw([[4, [0, 2]], [5, [1, 0]]])]
    const attempts: Array<number> = []
    const filled = await Effect.runPromise(DynamicSampling.fill({ targetGroups: 2, maxDraws: 5 }, (a) => Effect.sync(() => { attempts.push(a); return draws[a] })))
    expect(attempts).toEqual([0, 1, 2])
    expect(Array.from(Columns.int32Values(filled.batch.getChild("group_id")!))).toEqual([1, 1, 4, 4])
    expect(filled.droppedGroups).toBe(2)
  })

  it("on: stops at maxDraws with DynamicSamplingError, and a draw's own failure passes through", async () => {
    const err = await Effect.runPromise(Effect.flip(DynamicSampling.fill({ targetGroups: 1, maxDraws: 2 }, () => Effect.succeed(draw([[0, [1, 1]]])))))
    expect(err._tag).toBe("DynamicSamplingError")
    const own = await Effect.runPromise(Effect.flip(DynamicSampling.fill({ targetGroups: 1, maxDraws: 2 }, () => Effect.fail("rollout broke" as const))))
    expect(own).toBe("rollout broke")
  })
})
