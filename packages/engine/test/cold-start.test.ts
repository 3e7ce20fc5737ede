/**
 * The `sft` stage's `cold-start` source: R1's cold-start set of long chains of thought, built from the
 * run's train rows, written to `sft/<label>.arrow` and trained on.
 */
import { Backend } from "@r1flow/backend"
import { Metrics } from "@r1flow/core"
import { tableFromIPC } from "apache-arrow"
import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import * as Run from "../src/Run.js"
import { run, runFail, tempDir } from "./helpers.js"
import { arithmetic, model, testRecipe, tokenizer, writeRecipe } from "./support/recipes.js"

beforeAll(async () => {
  await Backend.init()
})

const LIMIT = 12

/** A fresh tiny policy with room for the chains (about 450 prompt + completion tokens under a 512-token compact vocabulary). */
const recipeFile = (prefix: string, seed: number, stages: ReadonlyArray<unknown>) =>
  writeRecipe(tempDir(prefix), testRecipe({
    name: prefix,
    seed,
    task: arithmetic(16, 2, ["+", "-"]),
    corpus: { count: 48 },
    tokenizer: { ...tokenizer, splitDigits: true },
    model: { ...model, maxSeqLen: 768 },
    stages
  }))

const coldStart = (steps: number, limit = LIMIT) => ({
  stage: "sft",
  name: "cold",
  config: { source: { kind: "cold-start", limit }, steps, batchSize: 4, optimizer: { learningRate: 0.01 }, logEvery: 1 }
})

const setOf = (root: string) => readFileSync(join(root, "sft", "cold.arrow"))

describe("sft source cold-start", () => {
  it("writes the set (the SFT-set schema), trains on it so the loss falls, and a later `source: set` stage reuses it", async () => {
    const lines: Array<string> = []
    const file = recipeFile("cold-start", 1, [coldStart(16), { stage: "sft", name: "again", config: { source: { kind: "set", stage: "cold" }, steps: 1, batchSize: 2 } }])
    const result = await run(Run.run(file, { overrides: [], log: (l) => lines.push(l) }))

    const table = tableFromIPC(setOf(result.dir.root))
    expect(table.schema.metadata.get("r1flow.schema")).toBe("sft-set")
    expect(table.numRows).toBe(LIMIT)
    expect(table.schema.fields.map((f) => f.name)).toEqual(["prompt", "completion", "prompt_ids", "completion_ids", "kind"])
    expect(new Set(Array.from(table.getChild("kind")!, (k) => String(k)))).toEqual(new Set(["reasoning"]))
    const completions = Array.from(table.getChild("completion")!, (c) => String(c))
    for (const c of completions) expect(c).toMatch(/^<think>\n[\s\S]*(double-check|verify|make sure|is that right)[\s\S]*<\/think><answer>\d+<\/answer>$/i)
    // The compact vocabulary learned the chains' words (2.24 characters a token here; 1.46 when it had not).
    const ids = table.getChild("completion_ids")!
    const tokens = Array.from({ length: table.numRows }, (_, i) => ids.get(i)!.length).reduce((a, b) => a + b, 0)
    expect(completions.join("").length / tokens).toBeGreaterThan(2)
    // every chain is a different problem's
    expect(new Set(Array.from(table.getChild("prompt")!, (p) => String(p))).size).toBe(LIMIT)
    expect(lines.some((l) => l.includes(`[cold] cold start: ${LIMIT} chains of thought from 16 train rows`))).toBe(true)

    const loss = Metrics.readJsonl(result.dir.metrics).entries.map((e) => e.values["cold/loss"]).filter((v) => v !== undefined)
    expect(loss.length).toBe(16)
    const mean = (xs: ReadonlyArray<number>) => xs.reduce((a, b) => a + b, 0) / xs.length
    expect(mean(loss.slice(-3))).toBeLessThan(0.8 * mean(loss.slice(0, 3)))
    expect(Metrics.readJsonl(result.dir.metrics).entries.some((e) => e.values["again/loss"] !== undefined)).toBe(true)
  }, 300_000)

  it("is the same set for the same seed", async () => {
    const a = await run(Run.run(recipeFile("cold-start-a", 7, [coldStart(1)]), { overrides: [], log: () => {} }))
    const b = await run(Run.run(recipeFile("cold-start-b", 7, [coldStart(1)]), { overrides: [], log: () => {} }))
    expect(Buffer.compare(setOf(a.dir.root), setOf(b.dir.root))).toBe(0)
  }, 300_000)

  it("takes a mixture's tasks at their weights, not its first task's rows (a mixture stores its train rows task after task)", async () => {
    const file = writeRecipe(tempDir("cold-start-mix"), testRecipe({
      name: "cold-start-mix",
      task: {
        kind: "mixture",
        tasks: [
          { name: "arith", weight: 1, task: arithmetic(40, 2, ["+", "-"]) },
          { name: "countdown", weight: 1, task: { kind: "countdown", numbers: 3, maxTarget: 30, train: 40, test: 2 } }
        ]
      },
      corpus: { count: 16 },
      tokenizer: { ...tokenizer, splitDigits: true },
      model: { ...model, maxSeqLen: 768 },
      stages: [coldStart(1, 20)]
    }))
    const result = await run(Run.run(file, { overrides: [], log: () => {} }))
    const prompts = Array.from(tableFromIPC(setOf(result.dir.root)).getChild("prompt")!, (p) => String(p))
    const countdowns = prompts.filter((p) => p.startsWith("Using the numbers")).length
    expect(prompts.length).toBe(20)
    // a seeded draw of 20 at weights 1:1 (the rows stored first, all 20 would be arithmetic)
    expect(countdowns).toBeGreaterThanOrEqual(5)
    expect(countdowns).toBeLessThanOrEqual(15)
  }, 300_000)

  it("fails naming the task and the reason when no train row has a generator", async () => {
    const root = tempDir("cold-start-jsonl")
    const rows = Array.from({ length: 4 }, (_, i) => JSON.stringify({ q: `Name prime number ${i}.`, a: "7" })).join("\n")
    writeFileSync(join(root, "train.jsonl"), rows)
    writeFileSync(join(root, "test.jsonl"), rows)
    const file = writeRecipe(root, testRecipe({
      name: "cold-start-jsonl",
      task: { kind: "jsonl", train: join(root, "train.jsonl"), test: join(root, "test.jsonl"), mapping: { question: "q", answer: "a" } },
      corpus: undefined,
      tokenizer: { ...tokenizer, size: 300 },
      model: { ...model, maxSeqLen: 512 },
      stages: [coldStart(1)]
    }))
    const err = await runFail(Run.run(file, { overrides: [], log: () => {} }))
    expect(err.message).toMatch(/no train row has a cold-start chain of thought: skipped 4 \w+ \(no cold-start generator for this task/)
  }, 120_000)
})
