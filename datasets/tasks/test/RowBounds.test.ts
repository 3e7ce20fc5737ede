import { mkdtemp, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Loaders } from "../src/index.js"

const run = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(effect)
const runFail = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(Effect.flip(effect))

let dir = ""
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "r1flow-bounds-"))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

const rows = (...qs: Array<string>) => qs.map((q, i) => JSON.stringify({ question: q, answer: `#### ${i}` }) + "\n").join("")

describe("absurd rows", () => {
  it("a question over MAX_TEXT_BYTES is a malformed record naming file and line, in every JSONL loader", async () => {
    const file = path.join(dir, "blob.jsonl")
    // 1 MiB + 2 bytes of question.
    await writeFile(file, rows("2 + 2?", "3 + 3?", "é".repeat((1 << 20) / 2 + 1)))
    for (const load of [Loaders.gsm8k(file), Loaders.questionAnswer(file), Loaders.jsonl(file, { mapping: { question: "question", answer: "answer" } })]) {
      const err = await runFail(load)
      expect(err).toMatchObject({ _tag: "MalformedRecord", file, line: 3 })
      expect(err.message).toContain(`${file}: line 3: field "question" is ${(1 << 20) + 2} bytes, over the ${Loaders.MAX_TEXT_BYTES}`)
    }
  })

  it("rows record the line they came from (blank and skipped lines are counted)", async () => {
    const file = path.join(dir, "lines.jsonl")
    await writeFile(file, rows("a?") + "\n" + "not json\n" + rows("b?", "c?"))
    const loaded = await run(Loaders.gsm8k(file, { onError: "skip" }))
    expect(loaded.rows.map((r) => r.question)).toEqual(["a?", "b?", "c?"])
    expect(loaded.lines).toEqual([1, 4, 5])
  })
})
