import { existsSync } from "node:fs"
import { mkdtemp, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { tableFromArrays, tableToIPC } from "apache-arrow"
import { Effect } from "effect"
import { Table as WasmTable, writeParquet } from "parquet-wasm"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Loaders, Task } from "../src/index.js"

const run = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(effect)

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..")
const gsm8kDir = path.resolve(repoRoot, "../shared/datasets/gsm8k")
const haveGsm8k = existsSync(path.join(gsm8kDir, "train.jsonl")) && existsSync(path.join(gsm8kDir, "test.jsonl"))
if (!haveGsm8k) console.warn(`GSM8K tests skipped: ${gsm8kDir}/{train,test}.jsonl not found`)

let dir = ""
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "r1flow-datasets-"))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

describe("Loaders.gsm8k on the real data", () => {
  it.skipIf(!haveGsm8k)("loads all 7,473 train and 1,319 test rows", async () => {
    const train = await run(Loaders.gsm8k(path.join(gsm8kDir, "train.jsonl")))
    const test = await run(Loaders.gsm8k(path.join(gsm8kDir, "test.jsonl")))
    expect(train.rows.length).toBe(7473)
    expect(test.rows.length).toBe(1319)
    expect(train.skipped + test.skipped).toBe(0)
    const first = train.rows[0]
    expect(first.id).toBe("gsm8k/train.jsonl:1")
    expect(first.question).toMatch(/^Natalia sold clips to 48 of her friends/)
    expect(first.answer).toBe("72")
    expect(String(first.metadata.solution)).toContain("<<48/2=24>>")
    // Final answers are kept verbatim (thousands commas included, if any); none is empty.
    for (const r of [...train.rows, ...test.rows]) expect(r.answer).toMatch(/^\S/)
    const batch = Task.toBatch(test.rows)
    expect(batch.numRows).toBe(1319)
    expect(batch.schema.metadata.get("r1flow.schema")).toBe("task-rows")
    expect(batch.getChild("prompt")!.get(0)).toBe(test.rows[0].question)
  })
})

describe("malformed files", () => {
  const lines = [
    JSON.stringify({ question: "What is 2 + 2?", answer: "2 + 2 = 4\n#### 4" }),
    "{\"question\": \"broken", // line 2: bad JSON
    "",
    JSON.stringify({ question: "No final answer", answer: "it is 5" }), // line 4
    JSON.stringify({ answer: "#### 3" }), // line 5: missing question
    JSON.stringify({ question: "Big", answer: "so\n#### 1,234" }), // line 6
    "[1, 2]" // line 7: not an object
  ]

  it("fails on the first bad line, naming the file and line", async () => {
    const file = path.join(dir, "bad.jsonl")
    await writeFile(file, lines.join("\n") + "\n")
    const e = await run(Effect.flip(Loaders.gsm8k(file)))
    expect(e._tag).toBe("MalformedRecord")
    if (e._tag !== "MalformedRecord") return
    expect(e.file).toBe(file)
    expect(e.line).toBe(2)
    expect(e.reason).toMatch(/^bad JSON/)
    expect(e.message).toContain(`${file}: line 2: bad JSON`)
  })

  it("skips and counts bad lines, with the reasons", async () => {
    const file = path.join(dir, "bad.jsonl")
    await writeFile(file, lines.join("\n") + "\n")
    const loaded = await run(Loaders.gsm8k(file, { onError: "skip" }))
    expect(loaded.rows.map((r) => [r.id, r.answer])).toEqual([["gsm8k/bad.jsonl:1", "4"], ["gsm8k/bad.jsonl:6", "1,234"]])
    expect(loaded.skipped).toBe(4)
    expect(loaded.issues.map((i) => i.line)).toEqual([2, 4, 5, 7])
    expect(loaded.issues[1].reason).toContain("####")
    expect(loaded.issues[2].reason).toBe(`missing field "question"`)
    expect(loaded.issues[3].reason).toMatch(/not a JSON object/)
    for (const i of loaded.issues) expect(i.file).toBe(file)
  })

  it("reports a missing file as a DataFileError", async () => {
    const e = await run(Effect.flip(Loaders.gsm8k(path.join(dir, "nope.jsonl"))))
    expect(e._tag).toBe("DataFileError")
    expect(e.message).toContain("nope.jsonl")
  })
})

describe("Loaders.jsonl", () => {
  it("maps fields, keeps the rest as metadata, and reports mistyped and duplicate records", async () => {
    const file = path.join(dir, "countdown.jsonl")
    const records = [
      { key: "a", nums: [3, 7, 25], target: 46, prompt: "Reach 46" },
      { key: "b", nums: [1, 2, 3], target: 6, prompt: "Reach 6" },
      { key: "c", nums: [1, 2], target: null, prompt: "Reach ?" }, // line 3: answer is null
      { key: "a", nums: [4], target: 4, prompt: "Again" }, // line 4: duplicate id
      { key: "d", nums: [9], target: 9, prompt: "" } // line 5: empty question
    ]
    await writeFile(file, records.map((r) => JSON.stringify(r)).join("\n"))
    const mapping = { question: "prompt", answer: "target", id: "key" }
    const loaded = await run(Loaders.jsonl(file, { mapping, onError: "skip" }))
    expect(loaded.rows).toEqual([
      { id: "a", question: "Reach 46", answer: "46", metadata: { nums: [3, 7, 25] } },
      { id: "b", question: "Reach 6", answer: "6", metadata: { nums: [1, 2, 3] } }
    ])
    expect(loaded.issues.map((i) => [i.line, i.reason.split(":")[0]])).toEqual([
      [3, `field "target"`],
      [4, `duplicate id "a" (first at line 1)`],
      [5, `field "prompt"`]
    ])
    const e = await run(Effect.flip(Loaders.jsonl(file, { mapping })))
    expect(e._tag === "MalformedRecord" && e.line).toBe(3)
    const noIds = await run(Loaders.jsonl(file, { mapping: { question: "prompt", answer: "target" }, onError: "skip" }))
    expect(noIds.rows.map((r) => r.id)).toEqual(["countdown.jsonl:1", "countdown.jsonl:2", "countdown.jsonl:4"])
    expect(noIds.rows[0].metadata).toEqual({ key: "a", nums: [3, 7, 25] })
  })
})

describe("Loaders.questionAnswer", () => {
  it("reads GSM8K answers by their #### line and plain answers as they are; a bad row names its line", async () => {
    const file = path.join(dir, "qa.jsonl")
    await writeFile(file, [
      JSON.stringify({ question: "What is 2 + 2?", answer: "4", source: "hand" }),
      JSON.stringify({ question: "What is 3 + 5?", answer: 8 }),
      JSON.stringify({ question: "What is 1 + 6?", answer: "1+6=7\n#### 7" }),
      "",
      JSON.stringify({ question: "What is 9 - 9?" })
    ].join("\n"))
    const loaded = await run(Loaders.questionAnswer(file, { onError: "skip" }))
    expect(loaded.rows).toEqual([
      { id: "qa.jsonl:1", question: "What is 2 + 2?", answer: "4", metadata: { source: "hand" } },
      { id: "qa.jsonl:2", question: "What is 3 + 5?", answer: "8", metadata: {} },
      { id: "qa.jsonl:3", question: "What is 1 + 6?", answer: "7", metadata: { solution: "1+6=7" } }
    ])
    const e = await run(Effect.flip(Loaders.questionAnswer(file)))
    expect(e.message).toBe(`${file}: line 5: missing field "answer"`)
  })
})

describe("Loaders.parquet", () => {
  const writeTable = async (file: string, columns: Parameters<typeof tableFromArrays>[0]) => {
    const wasm = WasmTable.fromIPCStream(tableToIPC(tableFromArrays(columns), "stream"))
    await writeFile(file, writeParquet(wasm))
  }

  it("round-trips a Parquet file through the mapping", async () => {
    const file = path.join(dir, "tasks.parquet")
    await writeTable(file, {
      problem: ["What is 1 + 1?", "What is 2 * 3?", "What is 9 - 4?"],
      solution: ["2", "6", "5"],
      level: Int32Array.from([1, 2, 3]),
      uid: ["p1", "p2", "p3"]
    })
    const loaded = await run(Loaders.parquet(file, { mapping: { question: "problem", answer: "solution", id: "uid" } }))
    expect(loaded.skipped).toBe(0)
    expect(loaded.rows).toEqual([
      { id: "p1", question: "What is 1 + 1?", answer: "2", metadata: { level: 1 } },
      { id: "p2", question: "What is 2 * 3?", answer: "6", metadata: { level: 2 } },
      { id: "p3", question: "What is 9 - 4?", answer: "5", metadata: { level: 3 } }
    ])
  })

  it("reports null cells by row, and a missing column or a non-Parquet file as a DataFileError", async () => {
    const file = path.join(dir, "nulls.parquet")
    await writeTable(file, { q: ["a?", null, "c?"], a: ["1", "2", null] })
    const loaded = await run(Loaders.parquet(file, { mapping: { question: "q", answer: "a" }, onError: "skip" }))
    expect(loaded.rows.map((r) => r.id)).toEqual(["nulls.parquet:1"])
    expect(loaded.issues.map((i) => [i.line, i.reason.split(":")[0]])).toEqual([[2, `field "q"`], [3, `field "a"`]])
    const failed = await run(Effect.flip(Loaders.parquet(file, { mapping: { question: "q", answer: "a" } })))
    expect(failed.message).toBe(`${file}: row 2: ${loaded.issues[0].reason}`)
    const noColumn = await run(Effect.flip(Loaders.parquet(file, { mapping: { question: "question", answer: "a" } })))
    expect(noColumn._tag).toBe("DataFileError")
    expect(noColumn.message).toContain(`no column "question" (columns: q, a)`)
    const notParquet = path.join(dir, "not.parquet")
    await writeFile(notParquet, "hello")
    const bad = await run(Effect.flip(Loaders.parquet(notParquet, { mapping: { question: "q", answer: "a" } })))
    expect(bad._tag).toBe("DataFileError")
  })
})
