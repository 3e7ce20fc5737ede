import { Backend } from "@r1flow/backend"
import { Metrics } from "@r1flow/core"
import { DuckDBInstance } from "@duckdb/node-api"
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import * as Run from "../src/Run.js"
import { run, runFail, tempDir, tinyOverrides } from "./helpers.js"

beforeAll(async () => {
  await Backend.init()
})

const recipeOf = (name: string) => JSON.parse(readFileSync(Run.resolveRecipe(name), "utf8")) as { stages: Array<{ stage: string; name?: string }> }

/**
 * The countdown recipe's accuracy reward (`@r1flow/reward-countdown`) read every row's task (NaN is its "no numbers and target in the metadata")
 * and gave only TinyZero's values, 0 / 0.1 / 1.
 */
const expectCountdownScored = async (rollouts: string) => {
  const db = await DuckDBInstance.create(":memory:")
  const conn = await db.connect()
  const glob = join(rollouts, "*.parquet").replace(/'/g, "''")
  const reader = await conn.runAndReadAll(`select count(*) as n, count(*) filter (where isnan(reward_accuracy) or reward_accuracy is null) as unscored, count(*) filter (where reward_accuracy not in (0, 0.1::float, 1)) as odd from read_parquet('${glob}')`)
  const [row] = reader.getRowObjectsJS() as Array<Record<string, unknown>>
  conn.closeSync()
  expect(Number(row.n)).toBeGreaterThan(0)
  expect(Number(row.unscored)).toBe(0)
  expect(Number(row.odd)).toBe(0)
}

/**
 * A reward-model stage's pairs from a file written here: a two-step GRPO of a random tiny policy has no
 * group with both a correct and an incorrect (or a consistent and a mixed-language) completion to pair, on
 * any machine. The rollouts source is tested on rewards that split such groups (reward-model-stage.test.ts).
 */
const pairsFromFile = (recipe: ReturnType<typeof recipeOf>, dir: string): Array<string> =>
  recipe.stages.flatMap((s, i) => {
    if (s.stage !== "reward-model") return []
    const file = join(dir, `pairs-${i}.jsonl`)
    const rows = Array.from({ length: 8 }, (_, k) => ({ prompt: `What is ${k} + 2?`, chosen: `<think>${k} + 2 = ${k + 2}</think><answer>${k + 2}</answer>`, rejected: `${k + 3}` }))
    writeFileSync(file, rows.map((r) => JSON.stringify(r)).join("\n"))
    return [`stages.${i}.config.source={"kind":"file","train":${JSON.stringify(file)}}`]
  })

/**
 * What the r1 recipe must show: after each eval stage, each task's held-out accuracy and format rate (and
 * language consistency where a chain of thought has words); the reward model's held-out accuracy; the
 * rejection-sampling accept rates per filter; the reward model scoring final RL's rollouts.
 */
const expectR1Reported = (root: string, recipe: ReturnType<typeof recipeOf>, entries: ReadonlyArray<Metrics.Entry>) => {
  const last: Record<string, number> = Object.assign({}, ...entries.map((e) => e.values))
  for (const s of recipe.stages.filter((x) => x.stage === "eval")) {
    const record = JSON.parse(readFileSync(join(root, "evals", `${s.name}.json`), "utf8"))
    expect(Object.keys(record.tasks), s.name).toEqual(["arith", "countdown"])
    for (const task of ["arith", "countdown"]) for (const k of ["accuracy", "format_rate"]) expect(last[`eval/${s.name}/${task}/${k}`], `${s.name} ${task} ${k}`).toBeGreaterThanOrEqual(0)
  }
  expect(last["rm/heldout_accuracy"]).toBeGreaterThanOrEqual(0)
  expect(last["rs/accept_rate"]).toBeGreaterThanOrEqual(0)
  const report = JSON.parse(readFileSync(join(root, "sft", "rs.json"), "utf8"))
  for (const f of report.filters as Array<string>) expect(last[`rs/rejected_rate/${f}`], f).toBeGreaterThanOrEqual(0)
  expect(existsSync(join(root, "reward-models", "rm"))).toBe(true)
}

describe("built-in recipes, test-sized", () => {
  for (const name of ["r1-zero", "r1", "distill", "countdown"]) {
    it(`${name}: the stages chain and the run directory is complete`, async () => {
      const runs = tempDir(`recipe-${name}`)
      const recipe = recipeOf(name)
      const lines: Array<string> = []
      const result = await run(Run.run(Run.resolveRecipe(name), { overrides: [...tinyOverrides(recipe, runs), ...pairsFromFile(recipe, runs)], log: (l) => lines.push(l) }))
      const dir = result.dir
      for (const f of [dir.manifest, dir.metrics, dir.report, join(dir.root, "summary.json"), join(dir.checkpoints, "latest")]) expect(existsSync(f), f).toBe(true)
      const manifest = JSON.parse(readFileSync(dir.manifest, "utf8"))
      expect(manifest.seed).toBe(1)
      expect(manifest.backend.name).toBe((await Backend.init()).name)
      expect(manifest.versions.effect).toBe("4.1.0")
      expect(manifest.recipe.stages.length).toBe(recipe.stages.length)
      // every stage ran, in order
      const started = lines.filter((l) => l.startsWith("── stage")).map((l) => l.split(": ")[1].split(" ")[0])
      expect(started).toEqual(recipe.stages.map((s) => s.name ?? s.stage))
      // one eval file per eval stage
      const evalNames = recipe.stages.filter((s) => s.stage === "eval").map((s) => `${s.name ?? "eval"}.json`)
      expect(readdirSync(dir.evals).sort()).toEqual(expect.arrayContaining(evalNames))
      expect(result.evals.length).toBeGreaterThanOrEqual(evalNames.length)
      // GRPO stages wrote their rollouts
      if (recipe.stages.some((s) => s.stage === "grpo")) expect(readdirSync(dir.rollouts).filter((f) => f.endsWith(".parquet")).length).toBeGreaterThan(0)
      const { entries } = Metrics.readJsonl(dir.metrics)
      expect(entries.length).toBeGreaterThan(0)
      expect(readFileSync(dir.report, "utf8")).toContain("<svg")
      if (name === "countdown") await expectCountdownScored(dir.rollouts)
      if (name === "r1") expectR1Reported(dir.root, recipe, entries)
    }, 120_000)
  }
})

describe("rollout files", () => {
  it("open in DuckDB with the right row count and reward column", async () => {
    const runs = tempDir("duckdb")
    const recipe = recipeOf("r1-zero")
    const result = await run(Run.run(Run.resolveRecipe("r1-zero"), { overrides: [...tinyOverrides(recipe, runs), "stages.0.config.steps=1"], log: () => {} }))
    const files = readdirSync(result.dir.rollouts).filter((f) => f.endsWith(".parquet")).sort()
    expect(files.length).toBe(2)
    const db = await DuckDBInstance.create(":memory:")
    const conn = await db.connect()
    const path = join(result.dir.rollouts, files[0]).replace(/'/g, "''")
    const reader = await conn.runAndReadAll(`select count(*) as n, count(reward) as scored, min(reward_accuracy) as lo, max(reward_accuracy) as hi, max(len(completion_ids)) as longest from read_parquet('${path}')`)
    const [row] = reader.getRowObjectsJS() as Array<Record<string, unknown>>
    expect(Number(row.n)).toBe(4) // 2 prompts × 2 completions
    expect(Number(row.scored)).toBe(4)
    expect(Number(row.lo)).toBeGreaterThanOrEqual(0)
    expect(Number(row.hi)).toBeLessThanOrEqual(1)
    expect(Number(row.longest)).toBeLessThanOrEqual(6)
    const cols = await conn.runAndReadAll(`select column_name from (describe select * from read_parquet('${path}'))`)
    const names = (cols.getRowObjectsJS() as Array<{ column_name: string }>).map((r) => r.column_name)
    expect(names).toEqual(expect.arrayContaining(["prompt", "completion", "reward", "reward_accuracy", "reward_format", "advantage", "logprobs"]))
    conn.closeSync()
  }, 120_000)
})

describe("standalone evaluation", () => {
  // One finished run serves every test here (made by whichever runs first).
  let finished: Promise<{ runs: string; result: { dir: { root: string; evals: string } } }> | undefined
  const finishedRun = () =>
    (finished ??= (async () => {
      const runs = tempDir("evaluate")
      const result = await run(Run.run(Run.resolveRecipe("r1-zero"), { overrides: tinyOverrides(recipeOf("r1-zero"), runs), log: () => {} }))
      return { runs, result }
    })())

  it("evaluates a finished run's policy on its held-out split and on a GSM8K-style JSONL file", async () => {
    const { runs, result } = await finishedRun()
    const heldOut = await run(Run.evaluate(result.dir.root, { data: "held-out", samples: 1, temperature: 0, maxNewTokens: 6, log: () => {} }))
    expect(heldOut.problems).toBe(4)
    expect(heldOut.accuracy).toBeGreaterThanOrEqual(0)
    expect(heldOut.file.startsWith(join(result.dir.evals, "standalone", `${heldOut.name}-`))).toBe(true)
    expect(existsSync(heldOut.file)).toBe(true)
    const file = join(runs, "mini-gsm8k.jsonl")
    writeFileSync(file, [
      JSON.stringify({ question: "What is 2 + 2?", answer: "2+2=4\n#### 4" }),
      JSON.stringify({ question: "What is 3 + 5?", answer: "3+5=8\n#### 8" })
    ].join("\n") + "\n")
    const gsm = await run(Run.evaluate(result.dir.root, { data: file, samples: 2, temperature: 1, maxNewTokens: 6, log: () => {} }))
    expect(gsm.problems).toBe(2)
    expect(gsm.samplesPerProblem).toBe(2)
    expect(gsm.name).toContain("mini-gsm8k")
  }, 120_000)

  it("evaluates plain {question, answer} rows, GSM8K ones among them", async () => {
    const { runs, result } = await finishedRun()
    const file = join(runs, "plain.jsonl")
    writeFileSync(file, [
      JSON.stringify({ question: "What is 2 + 2?", answer: "4" }),
      JSON.stringify({ question: "What is 3 + 5?", answer: 8 }),
      JSON.stringify({ question: "What is 1 + 6?", answer: "1+6=7\n#### 7" })
    ].join("\n") + "\n")
    const plain = await run(Run.evaluate(result.dir.root, { data: file, samples: 1, temperature: 0, maxNewTokens: 6, log: () => {} }))
    expect(plain.problems).toBe(3)
  }, 120_000)

  it("refuses a data file with no problems, naming it, and writes no result", async () => {
    const { runs, result } = await finishedRun()
    const empty = join(runs, "empty.jsonl")
    writeFileSync(empty, "\n\n")
    const err = await runFail(Run.evaluate(result.dir.root, { data: empty, samples: 1, temperature: 0, maxNewTokens: 6, log: () => {} }))
    expect(err.message).toContain(empty)
    expect(err.message).toMatch(/no problems/)
    const evals = readdirSync(result.dir.evals)
    expect(evals.some((f) => f.includes("empty"))).toBe(false)
  }, 120_000)
})

describe("bad input", () => {
  it("an unknown key or a wrong type in a recipe is refused before anything runs", async () => {
    const err = await runFail(Run.run(Run.resolveRecipe("r1-zero"), { overrides: ["model.dModel=\"wide\"", "rollout.temperature=1"], log: () => {} }))
    expect(err._tag).toBe("ConfigError")
    expect((err as unknown as { problems: Array<string> }).problems).toEqual(expect.arrayContaining(['model.dModel: expected number, got "wide"', "rollout: unknown key"]))
  })

  it("a bad stage config is refused before the first stage runs", async () => {
    const runs = tempDir("badstage")
    const lines: Array<string> = []
    const recipe = recipeOf("r1-zero")
    const err = await runFail(Run.run(Run.resolveRecipe("r1-zero"), { overrides: [...tinyOverrides(recipe, runs), "stages.2.config.groupSize=\"eight\""], log: (l) => lines.push(l) }))
    expect(err._tag).toBe("ConfigError")
    expect((err as unknown as { problems: Array<string> }).problems).toEqual(['stages[2].config.groupSize: expected number, got "eight"'])
    expect(lines.some((l) => l.startsWith("── stage"))).toBe(false)
  }, 60_000)

  it("an unknown stage plugin names the plugin", async () => {
    const runs = tempDir("nostage")
    const recipe = recipeOf("r1-zero")
    const err = await runFail(Run.run(Run.resolveRecipe("r1-zero"), { overrides: [...tinyOverrides(recipe, runs), "stages.1.stage=@acme/no-such-stage"], log: () => {} }))
    expect(err._tag).toBe("PluginError")
    expect((err as { plugin: string }).plugin).toBe("@acme/no-such-stage")
  }, 60_000)
})
