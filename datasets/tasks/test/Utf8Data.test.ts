import { mkdtemp, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { tableFromArrays, tableToIPC } from "apache-arrow"
import { Effect } from "effect"
import { Compression, Table as WasmTable, WriterPropertiesBuilder, writeParquet } from "parquet-wasm"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Loaders } from "../src/index.js"

const run = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(effect)
const runFail = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(Effect.flip(effect))

let dir = ""
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "r1flow-utf8-"))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

const enc = new TextEncoder()
const line = (o: unknown) => enc.encode(JSON.stringify(o) + "\n")
/** `{"question":"caf<0xE9> …"}`: Latin-1 é, which a WHATWG decoder turns into U+FFFD. */
const latin1Line = (answer: string) =>
  Buffer.concat([enc.encode('{"question":"caf'), Buffer.from([0xe9]), enc.encode(` au lait?","answer":"${answer}"}\n`)])

const jsonlFile = async (name: string) => {
  const file = path.join(dir, name)
  await writeFile(file, Buffer.concat([line({ question: "What is 2 + 2?", answer: "so\n#### 4" }), latin1Line("so\\n#### 3"), line({ question: "3 + 3?", answer: "#### 6" })]))
  return file
}

describe("non-UTF-8 bytes in data files", () => {
  it("a JSONL line with invalid UTF-8 fails the load naming the file and line (jsonl, gsm8k, questionAnswer)", async () => {
    const file = await jsonlFile("latin1.jsonl")
    for (const load of [
      Loaders.gsm8k(file),
      Loaders.questionAnswer(file),
      Loaders.jsonl(file, { mapping: { question: "question", answer: "answer" } })
    ]) {
      const err = await runFail(load)
      expect(err).toMatchObject({ _tag: "MalformedRecord", file, line: 2 })
      expect(err.message).toContain(`${file}: line 2:`)
      expect(err.message).toMatch(/invalid UTF-8 \(0xE9/)
    }
  })

  it("with onError skip the bad line is left out and reported, never loaded with U+FFFD", async () => {
    const loaded = await run(Loaders.gsm8k(await jsonlFile("latin1-skip.jsonl"), { onError: "skip" }))
    expect(loaded.rows.map((r) => r.answer)).toEqual(["4", "6"])
    expect(loaded.issues).toEqual([expect.objectContaining({ line: 2, reason: expect.stringMatching(/invalid UTF-8/) })])
    for (const r of loaded.rows) expect(r.question).not.toContain("\uFFFD")
  })

  it("a Parquet file with invalid UTF-8 in a string column is refused naming the file (parquet-wasm validates it)", async () => {
    const file = path.join(dir, "latin1.parquet")
    const table = tableFromArrays({ q: ["2 + 2?", "cafXX au lait?", "3 + 3?"], a: ["4", "5", "6"] })
    const props = new WriterPropertiesBuilder().setCompression(Compression.UNCOMPRESSED).setDictionaryEnabled(false).build()
    const bytes = Buffer.from(writeParquet(WasmTable.fromIPCStream(tableToIPC(table, "stream")), props))
    // Uncompressed pages hold the text as it is: make its "X" a Latin-1 é (0xE9) wherever it is stored.
    for (let at = bytes.indexOf("cafXX"); at >= 0; at = bytes.indexOf("cafXX", at + 1)) bytes[at + 3] = 0xe9
    await writeFile(file, bytes)
    const err = await runFail(Loaders.parquet(file, { mapping: { question: "q", answer: "a" } }))
    expect(err).toMatchObject({ _tag: "DataFileError", file })
    expect(err.message).toMatch(/non UTF-8/)
  })
})
