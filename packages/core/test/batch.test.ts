import { RecordBatch, Schema, tableFromIPC, tableToIPC, Table } from "apache-arrow"
import { describe, expect, it } from "vitest"
import * as Batch from "../src/Batch.js"
import * as Columns from "../src/Columns.js"

const prompts = () =>
  Batch.fromData(Batch.Prompts, {
    id: Columns.makeUtf8(["p0", "p1", "p2"]),
    group_id: Columns.makeInt32(Int32Array.from([0, 1, 2])),
    prompt: Columns.makeUtf8(["1+1?", "2+2?", "héllo 世界 🙂"]),
    prompt_ids: Columns.int32ListFromRows([[1, 2], [3], [4, 5, 6]]),
    answer: Columns.makeUtf8(["2", null, "x"]),
    metadata: Columns.makeUtf8(['{"a":1}', null, "{}"])
  })

const rollouts = () => {
  const p = prompts()
  return Batch.fromData(Batch.Rollouts, {
    ...Object.fromEntries(Batch.Prompts.fields.map((f) => [f.name, (p as RecordBatch).getChild(f.name)!])),
    completion: Columns.makeUtf8(["<think>x</think><answer>2</answer>", "", "z"]),
    completion_ids: Columns.int32ListFromRows([[7, 8, 9], [], [10]]),
    logprobs: Columns.float32ListFromRows([[-0.1, -0.2, -0.3], [], [-1.5]]),
    finish_reason: Columns.makeUtf8(["stop", "length", "stop"]),
    prompt_length: Columns.makeInt32(Int32Array.from([2, 1, 3])),
    completion_length: Columns.makeInt32(Int32Array.from([3, 0, 1]))
  })
}

const roundTrip = (batch: RecordBatch) => {
  const bytes = tableToIPC(new Table(batch), "file")
  const back = tableFromIPC(bytes)
  return back
}

describe("batch schemas", () => {
  it("every schema carries its name and version", () => {
    for (const [schema, name] of [[Batch.Prompts, "prompts"], [Batch.Rollouts, "rollouts"], [Batch.Scored, "scored"], [Batch.Advantages, "advantages"]] as const) {
      expect(schema.metadata.get("r1flow.schema")).toBe(name)
      expect(schema.metadata.get("r1flow.schema_version")).toBe(Batch.SCHEMA_VERSION)
    }
  })

  it("each schema round-trips through Arrow IPC unchanged", () => {
    const r = rollouts()
    const reward = Columns.makeFloat32(Float32Array.from([1, Number.NaN, 0.5]))
    const scored = Batch.fromData(Batch.Scored, { ...Object.fromEntries(r.schema.fields.map((f) => [f.name, (r as RecordBatch).getChild(f.name)!])), reward })
    const adv = Batch.fromData(Batch.Advantages, {
      ...Object.fromEntries(scored.schema.fields.map((f) => [f.name, (scored as RecordBatch).getChild(f.name)!])),
      advantage: Columns.makeFloat32(Float32Array.from([0.7, 0, -0.7]))
    })
    for (const batch of [prompts(), r, scored, adv] as Array<RecordBatch>) {
      const back = roundTrip(batch)
      expect(back.schema.fields.map((f) => `${f.name}:${f.type}`)).toEqual(batch.schema.fields.map((f) => `${f.name}:${f.type}`))
      expect(back.schema.metadata.get("r1flow.schema")).toBe(batch.schema.metadata.get("r1flow.schema"))
      expect(back.numRows).toBe(batch.numRows)
      for (const f of batch.schema.fields) {
        const a = batch.getChild(f.name)!.toArray()
        const b = back.getChild(f.name)!.toArray()
        expect(JSON.stringify(Array.from(b, (x: any) => (x?.toArray ? Array.from(x.toArray()) : x)))).toEqual(
          JSON.stringify(Array.from(a, (x: any) => (x?.toArray ? Array.from(x.toArray()) : x)))
        )
      }
    }
    // NaN rewards survive (they are not nulls).
    expect(Number.isNaN(roundTrip(scored).getChild("reward")!.get(1))).toBe(true)
  })

  it("rollouts record their sampling temperature; the log-probs' τ is it, 1 when greedy or unrecorded", () => {
    expect(Batch.logprobTemperature(Batch.rolloutsAt(0.7))).toBe(0.7)
    expect(Batch.logprobTemperature(Batch.rolloutsAt(0))).toBe(1)
    expect(Batch.logprobTemperature(Batch.Rollouts)).toBe(1)
    expect(Batch.rolloutsAt(0.7).metadata.get("r1flow.schema")).toBe("rollouts")
    const bad = new Map([[Batch.TEMPERATURE_KEY, "warm"]])
    expect(() => Batch.logprobTemperature(new Schema(Batch.Rollouts.fields, bad))).toThrow(/r1flow\.sampling\.temperature.*"warm"/)
  })
})

describe("list columns", () => {
  it("reads a List<Int32> column without copying its values", () => {
    const col = prompts().getChild("prompt_ids")!
    const view = Columns.int32List(col)
    expect(view.values.buffer).toBe(col.data[0].children[0].values.buffer)
    expect(Array.from(Columns.row(view, 2))).toEqual([4, 5, 6])
  })

  it("reads sliced batches correctly and still without copying values", () => {
    const r = rollouts().slice(1, 3)
    const ids = Columns.int32List(r.getChild("completion_ids")!)
    expect(ids.rows).toBe(2)
    expect(Array.from(Columns.row(ids, 0))).toEqual([])
    expect(Array.from(Columns.row(ids, 1))).toEqual([10])
    const lp = Columns.float32List(r.getChild("logprobs")!)
    expect(Array.from(Columns.row(lp, 1))).toEqual([-1.5])
    const rewards = Columns.makeFloat32(Float32Array.from([1, 2, 3, 4])).slice(1, 3)
    expect(Array.from(Columns.float32Values(rewards))).toEqual([2, 3])
    const base = rollouts()
    const sliced = base.slice(2, 3)
    const v = Columns.int32List(sliced.getChild("prompt_ids")!)
    expect(v.values.buffer).toBe(base.getChild("prompt_ids")!.data[0].children[0].values.buffer)
    expect(Array.from(v.values)).toEqual([4, 5, 6])
  })

  it("pads to [B, T] with a mask, right or left", () => {
    const view = Columns.int32List(prompts().getChild("prompt_ids")!)
    const right = Columns.toPadded(view, { padId: 0 })
    expect(right.time).toBe(3)
    expect(Array.from(right.ids)).toEqual([1, 2, 0, 3, 0, 0, 4, 5, 6])
    expect(Array.from(right.mask)).toEqual([1, 1, 0, 1, 0, 0, 1, 1, 1])
    const left = Columns.toPadded(view, { padId: 0, side: "left", time: 4 })
    expect(Array.from(left.ids)).toEqual([0, 0, 1, 2, 0, 0, 0, 3, 0, 4, 5, 6])
    expect(() => Columns.toPadded(view, { padId: 0, time: 2 })).toThrow(/3 tokens/)
  })

  it("reads multi-chunk columns by concatenating", () => {
    const a = Columns.int32ListFromRows([[1], [2, 3]])
    const b = Columns.int32ListFromRows([[4, 5, 6]])
    const view = Columns.int32List(a.concat(b))
    expect(view.rows).toBe(3)
    expect(Array.from(view.offsets)).toEqual([0, 1, 3, 6])
  })
})
