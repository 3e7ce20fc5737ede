/**
 * The run's data is checked when it is loaded: an empty train or held-out set is an error naming the
 * file, and a row whose templated prompt does not fit the model's context is an error naming its file,
 * line and id, before any stage runs (not "prompt 3 has … tokens" in the middle of a stage).
 */
import { Backend } from "@r1flow/backend"
import { existsSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import * as Data from "../src/Data.js"
import * as Run from "../src/Run.js"
import { run, runFail, tempDir } from "./helpers.js"
import { markStage, model, testRecipe, tokenizer, writeModule, writeRecipe } from "./support/recipes.js"

beforeAll(async () => {
  await Backend.init()
})

const mapping = { question: "q", answer: "a" }
const jsonl = (rows: ReadonlyArray<Record<string, unknown>>) => rows.map((r) => JSON.stringify(r) + "\n").join("")
const problems = (n: number) => Array.from({ length: n }, (_, i) => ({ q: `What is ${i} + 1?`, a: String(i + 1), id: `p${i}` }))

describe("empty data", () => {
  it("an empty train or test file is a DataError naming the file", async () => {
    const root = tempDir("data-empty")
    const empty = join(root, "empty.jsonl")
    const some = join(root, "some.jsonl")
    writeFileSync(empty, "\n\n")
    writeFileSync(some, jsonl(problems(3)))
    const train = await runFail(Data.build({ kind: "jsonl", train: empty, test: some, mapping }, 1, { corpusSize: 0 }))
    expect(train).toMatchObject({ _tag: "DataError" })
    expect(train.message).toContain(`${empty}: the train set has no problems`)
    const test = await runFail(Data.build({ kind: "jsonl", train: some, test: empty, mapping }, 1, { corpusSize: 0 }))
    expect(test.message).toContain(`${empty}: the test set has no problems`)
  })

  it("a file whose every record was skipped (onError skip) is empty too, and says why", async () => {
    const root = tempDir("data-skipped")
    const bad = join(root, "bad.jsonl")
    const some = join(root, "some.jsonl")
    writeFileSync(bad, jsonl([{ question: "no #### here", answer: "4" }, { question: "nor here", answer: "5" }]))
    writeFileSync(some, jsonl([{ question: "2+2?", answer: "#### 4" }]))
    const err = await runFail(Data.build({ kind: "gsm8k", train: bad, test: some, onError: "skip" }, 1, { corpusSize: 0 }))
    expect(err.message).toMatch(new RegExp(`${bad}: the train set has no problems \\(all 2 records were skipped.*line 1: field "answer" has no "#### "`))
  })
})

describe("rows longer than the context", () => {
  const recipe = (root: string, train: string, test: string) => {
    writeModule(root, "stages/mark.mjs", markStage("__r1flowDataCheckRan"))
    return writeRecipe(root, testRecipe({
      name: "data-check",
      task: { kind: "jsonl", train, test, mapping: { ...mapping, id: "id" } },
      corpus: undefined,
      tokenizer: { ...tokenizer, size: 300 },
      model: { ...model, maxSeqLen: 512 },
      stages: [
        { stage: "./stages/mark.mjs" },
        { stage: "eval", config: { samples: 1, sampling: { maxNewTokens: 2, temperature: 1 } } }
      ]
    }))
  }

  it("a held-out row whose prompt does not fit maxSeqLen fails the run before any stage, naming file:line and id", async () => {
    const root = tempDir("data-long")
    const train = join(root, "train.jsonl")
    const test = join(root, "test.jsonl")
    writeFileSync(train, jsonl(problems(4)))
    const rows = problems(3)
    rows[1] = { ...rows[1], q: `Sum these: ${Array.from({ length: 400 }, (_, i) => i).join(" + ")}` }
    writeFileSync(test, jsonl(rows))
    ;(globalThis as { __r1flowDataCheckRan?: boolean }).__r1flowDataCheckRan = false
    const err = await runFail(Run.run(recipe(root, train, test), { log: () => {} }))
    expect((globalThis as { __r1flowDataCheckRan?: boolean }).__r1flowDataCheckRan).toBe(false)
    expect(err.message).toMatch(new RegExp(`${test}:2: row "p1": its prompt is \\d+ tokens .*maxSeqLen 512`))
    // Refused before the run directory is made (nothing is created until every up-front check passes).
    expect(existsSync(join(root, "runs"))).toBe(false)
  }, 120_000)

  it("an absurd row (600 KB) is refused by its size, without tokenizing it", async () => {
    const root = tempDir("data-absurd")
    const train = join(root, "train.jsonl")
    const test = join(root, "test.jsonl")
    const rows = problems(4)
    rows[3] = { ...rows[3], q: "x".repeat(600_000) }
    writeFileSync(train, jsonl(rows))
    writeFileSync(test, jsonl(problems(2)))
    const err = await runFail(Run.run(recipe(root, train, test), { log: () => {} }))
    expect(err.message).toMatch(new RegExp(`${train}:4: row "p3": its question is 600000 bytes`))
  }, 120_000)

  it("data that fits runs", async () => {
    const root = tempDir("data-fits")
    const train = join(root, "train.jsonl")
    const test = join(root, "test.jsonl")
    writeFileSync(train, jsonl(problems(4)))
    writeFileSync(test, jsonl(problems(2)))
    const result = await run(Run.run(recipe(root, train, test), { log: () => {} }))
    expect(result.evals.length).toBe(1)
  }, 120_000)
})
