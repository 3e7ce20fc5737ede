import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Field, Float32, Int32, RecordBatch, Schema, Utf8 } from "apache-arrow"
import { Effect, Schema as EffectSchema, Stream } from "effect"
import { describe, expect, it } from "vitest"
import * as Batch from "../src/Batch.js"
import * as Columns from "../src/Columns.js"
import * as Pipeline from "../src/Pipeline.js"
import * as Stage from "../src/Stage.js"
import * as UserStage from "../src/UserStage.js"
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

  it("a pipeline built at run time is checked when it is built: from the source, through each stage, to the sink", async () => {
    const sink = { name: "trainer", input: WithFlag }
    const ok = await run(Pipeline.make([length, score, flag], { source: Text, sink }))
    expect(ok.output.fields.map((f) => f.name)).toEqual(["text", "len", "score", "long"])
    const out = await run(Pipeline.runBatch(ok, textBatch(["abcd"])))
    expect(Array.from(out.getChild("long")!.toArray())).toEqual([1])
    const gap = await runFail(Pipeline.make([length, flag], { source: Text, sink }))
    expect(gap.message).toBe('stage "flag" needs what stage "length" does not give: missing column "score" (expected Float32)')
    const short = await runFail(Pipeline.make([length, score], { source: Text, sink }))
    expect(short.message).toBe('"trainer" needs what stage "score" does not give: missing column "long" (expected Int32)')
  })

  it("replaceColumns gives a new batch with a column's values rewritten, the input untouched; another type or length is refused", async () => {
    const input = await run(length.run(textBatch(["ab", "abc"])))
    const out = await run(Stage.replaceColumns("double", input, { len: Columns.makeInt32(Int32Array.from([4, 6])) }))
    expect(Array.from(Columns.int32Values(out.getChild("len")!))).toEqual([4, 6])
    expect(Array.from(Columns.int32Values(input.getChild("len")!))).toEqual([2, 3])
    expect(out.getChild("text")!.data[0]).toBe(input.getChild("text")!.data[0])
    expect((await runFail(Stage.replaceColumns("x", input, { len: Columns.makeFloat32(Float32Array.from([1, 2])) }))).message).toBe('column "len" has type Float32, the batch\'s is Int32')
    expect((await runFail(Stage.replaceColumns("x", input, { len: Columns.makeInt32(Int32Array.from([1])) }))).message).toBe('column "len" has 1 rows, the batch 2')
    expect((await runFail(Stage.replaceColumns("x", input, { nope: Columns.makeInt32(Int32Array.from([1, 2])) }))).message).toContain('no such column')
  })
})

describe("UserStage", () => {
  const dir = mkdtempSync(join(tmpdir(), "r1flow-user-stage-"))
  const effectUrl = import.meta.resolve("effect")
  const arrowUrl = import.meta.resolve("apache-arrow")
  mkdirSync(join(dir, "stages"))
  // A pipeline-stage plugin as a user writes one, without core: a stage is a name, two schemas and run.
  writeFileSync(join(dir, "stages", "tag.mjs"), `import { Effect, Schema } from ${JSON.stringify(effectUrl)}
import { Field, Schema as ArrowSchema, Utf8 } from ${JSON.stringify(arrowUrl)}
const text = new ArrowSchema([new Field("text", new Utf8(), false)])
export default { kind: "pipeline-stage", name: "tag", version: "1.0.0", description: "passes batches through", config: Schema.Struct({ label: Schema.String }),
  make: (config) => ({ name: "tag:" + config.label, input: text, output: text, run: (batch) => Effect.succeed(batch) }) }`)
  writeFileSync(join(dir, "stages", "nothing.mjs"), `import { Schema } from ${JSON.stringify(effectUrl)}
export default { kind: "pipeline-stage", name: "nothing", version: "1.0.0", description: "makes no stage", config: Schema.Struct({}), make: () => 42 }`)

  it("loads a pipeline-stage plugin by path, with its config decoded by its own schema", async () => {
    const stage = await run(UserStage.load({ plugin: "./stages/tag.mjs", config: { label: "a" } }, { from: dir, where: "afterRewards[0]" }))
    expect(stage.name).toBe("tag:a")
    const out = await run(Pipeline.runBatch(await run(Pipeline.make([stage], { source: Text, sink: { name: "end", input: Text } })), textBatch(["x"])))
    expect(out.numRows).toBe(1)
  })

  it("refuses a bad config, a make that returns no stage, and a plugin of another kind, each named by its path", async () => {
    const typo = await runFail(UserStage.load({ plugin: "./stages/tag.mjs", config: { lable: "a" } }, { from: dir, where: "afterRewards[0]" }))
    expect(typo.message).toContain("afterRewards[0].config.lable: unknown key")
    const none = await runFail(UserStage.load({ plugin: "./stages/nothing.mjs" }, { from: dir, where: "afterRollout[1]" }))
    expect(none.message).toMatch(/^afterRollout\[1\]: make\(config\) did not return a stage/)
    writeFileSync(join(dir, "stages", "reward.mjs"), `import { Schema } from ${JSON.stringify(effectUrl)}
export default { kind: "reward", name: "r", version: "1.0.0", description: "a reward", config: Schema.Struct({}), make: () => ({ score: () => new Float32Array(0) }) }`)
    const kind = await runFail(UserStage.load({ plugin: "./stages/reward.mjs" }, { from: dir, where: "afterAdvantages[0]" }))
    expect(kind.message).toBe("afterAdvantages[0].plugin: is a reward plugin, but a pipeline-stage plugin is needed here")
  })

  it("define is the typed helper for a plugin's default export", () => {
    const plugin = UserStage.define({ name: "noop", version: "1.0.0", description: "", config: EffectSchema.Struct({}), make: () => length })
    expect(plugin.kind).toBe("pipeline-stage")
    expect(plugin.make({})).toBe(length)
  })
})
