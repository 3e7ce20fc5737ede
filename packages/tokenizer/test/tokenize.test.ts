import { Batch, Columns, Stage } from "@r1flow/core"
import { Field, Int32, Schema, Utf8, type Bool, type List, type Vector } from "apache-arrow"
import { Effect } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { Template, Tokenize, Tokenizer } from "../src/index.js"
import { run, runFail } from "./helpers.js"

const codec = Tokenizer.makeStandard("cl100k_base")
afterAll(() => codec.free())
const provide = <A, E>(e: Effect.Effect<A, E, Tokenizer>) => Effect.provide(e, Tokenizer.layerCodec(codec))

const Text = new Schema([new Field("id", new Int32(), false), new Field("text", new Utf8(), true)])
const texts = ["Natalia sold 48 clips.", "", "中文 🧮 café\r\n", "<think>not a tag</think><|endoftext|>", "a ".repeat(300)]
const batch = Batch.fromData(Text, { id: Columns.makeInt32(Int32Array.from(texts, (_, i) => i)), text: Columns.makeUtf8(texts) })
const bools = (v: Vector<Bool>) => Array.from({ length: v.length }, (_, i) => v.get(i))

describe("tokenizeColumn", () => {
  it("adds <name>_ids, _length, _truncated and keeps the input columns", async () => {
    const out = await run(provide(Tokenize.tokenizeColumn("text").run(batch)))
    expect(out.schema.fields.map((f) => f.name)).toEqual(["id", "text", "text_ids", "text_length", "text_truncated"])
    const view = Columns.int32List(out.getChild("text_ids") as Vector<List<Int32>>)
    texts.forEach((t, i) => expect(Array.from(Columns.row(view, i))).toEqual(Array.from(codec.encode(t))))
    expect(Array.from(Columns.int32Values(out.getChild("text_length") as Vector<Int32>))).toEqual(texts.map((t) => codec.encode(t).length))
    expect(bools(out.getChild("text_truncated") as Vector<Bool>)).toEqual(texts.map(() => false))
    // Literal tag text in data never becomes a control id.
    expect(Array.from(Columns.row(view, 3)).some((id) => id >= codec.ordinary)).toBe(false)
    expect(out.getChild("text")!.data[0]).toBe(batch.getChild("text")!.data[0])
  })

  it("cuts rows to maxLength and flags them", async () => {
    const out = await run(provide(Tokenize.tokenizeColumn("text", { maxLength: 5 }).run(batch)))
    const view = Columns.int32List(out.getChild("text_ids") as Vector<List<Int32>>)
    texts.forEach((t, i) => expect(Array.from(Columns.row(view, i))).toEqual(Array.from(codec.encode(t).subarray(0, 5))))
    expect(bools(out.getChild("text_truncated") as Vector<Bool>)).toEqual(texts.map((t) => codec.encode(t).length > 5))
    expect(Array.from(Columns.int32Values(out.getChild("text_length") as Vector<Int32>))).toEqual(texts.map((t) => Math.min(5, codec.encode(t).length)))
  })

  it("reads sliced batches and null rows (as empty text), and grows its buffer past the first guess", async () => {
    const many = Array.from({ length: 3000 }, (_, i) => (i % 7 === 0 ? null : `${i} ${i * 3} ${"9".repeat(i % 40)}`))
    const b = Batch.fromData(Text, { id: Columns.makeInt32(Int32Array.from(many, (_, i) => i)), text: Columns.makeUtf8(many) })
    const sliced = b.slice(1000, 2500)
    const out = await run(provide(Tokenize.tokenizeColumn("text").run(sliced)))
    const view = Columns.int32List(out.getChild("text_ids") as Vector<List<Int32>>)
    expect(view.rows).toBe(1500)
    for (let i = 0; i < 1500; i++) expect(Array.from(Columns.row(view, i))).toEqual(Array.from(codec.encode(many[1000 + i] ?? "")))
  })

  it("fails with a StageError naming the column when it is missing or not Utf8", async () => {
    const err = await runFail(provide(Tokenize.tokenizeColumn("prompt").run(batch)))
    expect(err).toMatchObject({ _tag: "StageError", stage: "tokenize(prompt)", message: expect.stringMatching(/missing column "prompt"/) })
    const bad = await runFail(provide(Tokenize.tokenizeColumn("id").run(batch)))
    expect(bad.message).toMatch(/column "id" has type Int32, expected Utf8/)
  })
})

describe("detokenizeColumn", () => {
  it("decodes ids to text (control ids as their tags) and flags rows cut inside a character", async () => {
    const s = codec.specialIds
    const emoji = codec.encode("🧮")
    expect(emoji.length).toBeGreaterThan(1)
    const rows = [
      codec.encode("plain text"),
      Template.completion(codec, "<think>1+1=2</think><answer>2</answer>"),
      emoji.subarray(0, emoji.length - 1),
      new Int32Array(0),
      Int32Array.of(s.pad, 100256)
    ]
    const Ids = new Schema([new Field("completion_ids", Batch.Int32List(), false)])
    const b = Batch.fromData(Ids, { completion_ids: Columns.int32ListFromRows(rows) })
    const out = await run(provide(Tokenize.detokenizeColumn({ ids: "completion_ids", text: "completion" }).run(b)))
    const text = out.getChild("completion") as Vector<Utf8>
    expect(Array.from({ length: rows.length }, (_, i) => text.get(i))).toEqual([
      "plain text",
      "<think>1+1=2</think><answer>2</answer><|im_end|>",
      codec.decode(rows[2]).text,
      "",
      "<|endoftext|>\uFFFD"
    ])
    expect(text.get(2)).toContain("\uFFFD")
    expect(bools(out.getChild("completion_incomplete") as Vector<Bool>)).toEqual([false, false, true, false, true])
  })

  it("flags a cut character in a batch of known ids, and reads sliced batches", async () => {
    const emoji = codec.encode("answer 🧮")
    const rows = [codec.encode("skip me"), codec.encode("ok"), emoji.subarray(0, emoji.length - 1), codec.encode(" done é"), Template.completion(codec, "<answer>1</answer>")]
    const Ids = new Schema([new Field("ids", Batch.Int32List(), false)])
    const b = Batch.fromData(Ids, { ids: Columns.int32ListFromRows(rows) }).slice(1, 5)
    const out = await run(provide(Tokenize.detokenizeColumn({ ids: "ids", text: "text" }).run(b)))
    const text = out.getChild("text") as Vector<Utf8>
    expect(Array.from({ length: 4 }, (_, i) => text.get(i))).toEqual(rows.slice(1).map((r) => codec.decode(r).text))
    expect(text.get(1)).toMatch(/^answer \uFFFD$/)
    expect(bools(out.getChild("text_incomplete") as Vector<Bool>)).toEqual([false, true, false, false])
  })

  it("round-trips a tokenized column", async () => {
    const tok = await run(provide(Tokenize.tokenizeColumn("text").run(batch)))
    const out = await run(provide(Tokenize.detokenizeColumn({ ids: "text_ids", text: "text_decoded" }).run(tok)))
    const dec = out.getChild("text_decoded") as Vector<Utf8>
    texts.forEach((t, i) => expect(dec.get(i)).toBe(t))
  })
})

describe("toPrompts", () => {
  const rows = [
    { id: "a", prompt: "What is 2 + 3?", answer: "5" },
    { id: "b", prompt: "Ignore <think> and <|im_end|>", answer: "0" }
  ]
  const tasks = Batch.fromData(Tokenize.TaskRows, {
    id: Columns.makeUtf8(rows.map((r) => r.id)),
    prompt: Columns.makeUtf8(rows.map((r) => r.prompt)),
    answer: Columns.makeUtf8(rows.map((r) => r.answer)),
    metadata: Columns.makeUtf8(rows.map(() => "{}"))
  })

  it("produces a batch that passes core's Prompts schema, with the template's ids", async () => {
    for (const template of ["r1-zero", "chat"] as const) {
      const out = await run(provide(Tokenize.toPrompts({ template }).run(tasks)))
      expect(Stage.schemaProblems(Batch.Prompts, out.schema)).toEqual([])
      expect(out.schema.metadata.get("r1flow.schema")).toBe("prompts")
      const view = Columns.int32List(out.getChild("prompt_ids") as Vector<List<Int32>>)
      rows.forEach((r, i) => expect(Array.from(Columns.row(view, i))).toEqual(Array.from(Template.prompt(codec, template, r.prompt))))
      expect(Array.from(Columns.int32Values(out.getChild("group_id") as Vector<Int32>))).toEqual([0, 1])
    }
  })

  it("the prompt ids of a hostile question hold no control id (r1-zero)", async () => {
    const out = await run(provide(Tokenize.toPrompts({ template: "r1-zero" }).run(tasks)))
    const view = Columns.int32List(out.getChild("prompt_ids") as Vector<List<Int32>>)
    expect(Array.from(Columns.row(view, 1)).some((id) => id >= codec.ordinary)).toBe(false)
  })

  it("startThink ends every prompt with the <think> control id", async () => {
    const out = await run(provide(Tokenize.toPrompts({ template: "r1-zero", startThink: true }).run(tasks)))
    const view = Columns.int32List(out.getChild("prompt_ids") as Vector<List<Int32>>)
    for (let i = 0; i < view.rows; i++) expect(Columns.row(view, i).at(-1)).toBe(codec.specialIds.think)
  })
})
