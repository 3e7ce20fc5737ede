import { Field, Float32, Int32, RecordBatch, Schema, Utf8 } from "apache-arrow"
import { Effect, Stream } from "effect"
import { describe, expect, it } from "vitest"
import * as Batch from "../src/Batch.js"
import * as Columns from "../src/Columns.js"
import * as Pipeline from "../src/Pipeline.js"
import * as Stage from "../src/Stage.js"
import { run, runFail } from "./helpers.js"

const Text = new Schema([new Field("text", new Utf8(), false)]) as Schema<{ text: Utf8 }>
const WithLen = new Schema([new Field("text", new Utf8(), false), new Field("len", new Int32(), false)]) as Schema<{ text: Utf8; len: Int32 }>
const WithScore = new Schema([...WithLen.fields, new Field("score", new Float32(), false)]) as Schema<{ text: Utf8; len: Int32; score: Float32 }>
const WithFlag = new Schema([...WithScore.fields, new Field("long", new Int32(), false)]) as Schema<{ text: Utf8; len: Int32; score: Float32; long: Int32 }>

const textBatch = (texts: Array<string>) => Batch.fromData(Text, { text: Columns.makeUtf8(texts) })

const length = Stage.make({
  name: "length",
  input: Text,
  output: WithLen,
  transform: (b) => Stage.addColumns("length", b, WithLen, { len: Columns.makeInt32(Int32Array.from(b.getChild("text")!.toArray() as unknown as Array<string>, (t) => t.length)) })
})
const score = Stage.make({
  name: "score",
  input: WithLen,
  output: WithScore,
  transform: (b) =>
    Stage.addColumns("score", b, WithScore, { score: Columns.makeFloat32(Float32Array.from(Columns.int32Values(b.getChild("len")!), (n) => n / 10)) })
})
const flag = Stage.make({
  name: "flag",
  input: WithScore,
  output: WithFlag,
  transform: (b) =>
    Stage.addColumns("flag", b, WithFlag, { long: Columns.makeInt32(Int32Array.from(Columns.float32Values(b.getChild("score")!), (s) => (s > 0.3 ? 1 : 0))) })
})

describe("pipeline", () => {
  it("runs three stages over a stream of batches", async () => {
    const p = Pipeline.from(length).pipe(score).pipe(flag)
    const out = await run(
      Stream.runCollect(Pipeline.run(p, Stream.fromIterable([textBatch(["a", "abcd"]), textBatch(["abcdefgh"]), textBatch([])])))
    )
    const batches = out as ReadonlyArray<RecordBatch>
    expect(batches.map((b) => b.numRows)).toEqual([2, 1, 0])
    expect(batches[0].schema.fields.map((f) => f.name)).toEqual(["text", "len", "score", "long"])
    expect(Array.from(batches[0].getChild("long")!.toArray())).toEqual([0, 1])
    expect(batches[1].getChild("score")!.get(0)).toBeCloseTo(0.8)
  })

  it("stages never mutate their input", async () => {
    const input = textBatch(["xyz"])
    const out = await run(length.run(input))
    expect(input.schema.fields.map((f) => f.name)).toEqual(["text"])
    expect(out.getChild("text")!.data[0]).toBe(input.getChild("text")!.data[0])
  })

  it("a stage refuses to overwrite a column it was given", async () => {
    const bad = Stage.make({
      name: "bad",
      input: WithLen,
      output: WithLen,
      transform: (b) => Stage.addColumns("bad", b, WithLen, { len: Columns.makeInt32(new Int32Array(b.numRows)) })
    })
    const withLen = await run(length.run(textBatch(["ab"])))
    const err = await runFail(bad.run(withLen))
    expect(err.message).toMatch(/would overwrite input column "len"/)
  })

  it("a batch of the wrong schema is refused on entry, naming stage, column and type", async () => {
    const wrong = Batch.fromData(new Schema([new Field("text", new Int32(), false)]), { text: Columns.makeInt32(Int32Array.from([1])) })
    const err = await runFail(length.run(wrong as unknown as RecordBatch<any>))
    expect(err._tag).toBe("StageError")
    expect(err.stage).toBe("length")
    expect(err.message).toContain('column "text" has type Int32, expected Utf8')
    const missing = await runFail(score.run(textBatch(["a"]) as unknown as RecordBatch<any>))
    expect(missing.message).toContain('missing column "len" (expected Int32)')
  })

  it("stages that do not fit are rejected before any data flows", async () => {
    let pulled = 0
    const source = Stream.fromIterable([textBatch(["a"])]).pipe(Stream.tap(() => Effect.sync(() => { pulled++ })))
    const err = await runFail(Stream.runCollect(Pipeline.run({ ...Pipeline.from(length), stages: [length, flag] } as any, source)))
    expect((err as Pipeline.PipelineError)._tag).toBe("PipelineError")
    expect((err as Pipeline.PipelineError).message).toContain('stage "flag" needs what stage "length" does not give: missing column "score"')
    expect(pulled).toBe(0)
  })

  it("a mismatch is a compile-time error where the types allow", () => {
    // @ts-expect-error: `flag` needs `score`, which `length` does not produce
    const p = Pipeline.from(length).pipe(flag)
    expect(p.stages.length).toBe(2)
  })

  it("takeRows keeps every column type", () => {
    const b = Batch.fromData(Batch.Prompts, {
      id: Columns.makeUtf8(["a", "b", "c"]),
      group_id: Columns.makeInt32(Int32Array.from([0, 1, 2])),
      prompt: Columns.makeUtf8(["x", "y", "z"]),
      prompt_ids: Columns.int32ListFromRows([[1], [2, 3], []]),
      answer: Columns.makeUtf8(["1", null, "3"]),
      metadata: Columns.makeUtf8([null, null, "{}"])
    })
    const t = Stage.takeRows(b, [2, 1])
    expect(t.getChild("id")!.toArray()).toEqual(["c", "b"])
    expect(Array.from(Columns.row(Columns.int32List(t.getChild("prompt_ids")!), 1))).toEqual([2, 3])
    expect(t.getChild("answer")!.get(1)).toBeNull()
    expect(String(t.schema.fields[3].type)).toBe("List<Int32>")
  })
})
