import { Backend } from "@r1flow/backend"
import { Config as CoreConfig, Metrics } from "@r1flow/core"
import { Arithmetic, Countdown } from "@r1flow/datasets"
import { tableFromIPC } from "apache-arrow"
import { readdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { readParquet } from "parquet-wasm"
import { beforeAll, describe, expect, it } from "vitest"
// The test recomputes the plugin's own score to check the eval's mean; the engine itself loads it by name.
// eslint-disable-next-line @nx/enforce-module-boundaries
import { Scripts, Trigram } from "@r1flow/reward-language-consistency"
import * as Data from "../src/Data.js"
import * as Prompts from "../src/Prompts.js"
import * as Recipe from "../src/Recipe.js"
import * as Run from "../src/Run.js"
import { run, runFail, tempDir } from "./helpers.js"
import { effectUrl, testRecipe, tokenizer, writeRecipe } from "./support/recipes.js"

beforeAll(async () => {
  await Backend.init()
})

const arith = { kind: "arithmetic", digits: [1, 2], ops: ["+"], train: 12, test: 3 } as const
const countdown = { kind: "countdown", numbers: 3, maxTarget: 30, train: 10, test: 2 } as const
const mixture = (tasks: ReadonlyArray<unknown>) => ({ kind: "mixture", tasks })

const decodeTask = (task: unknown) => run(CoreConfig.decode(Recipe.Task, task, { source: "recipe", prefix: "task" }))
const problemsOf = async (task: unknown) => (await runFail(CoreConfig.decode(Recipe.Task, task, { source: "recipe", prefix: "task" }))).problems.join("\n")

describe("recipe: task mixtures", () => {
  it("decodes a mixture with default weights and names (the inner kind)", async () => {
    const task = await decodeTask(mixture([{ name: "arith", weight: 2, task: arith }, { task: countdown }]))
    expect(Recipe.tasksOf(task).map((t) => [t.name, t.weight, t.task.kind])).toEqual([["arith", 2, "arithmetic"], ["countdown", 1, "countdown"]])
    const single = await decodeTask(arith)
    expect(Recipe.tasksOf(single).map((t) => [t.name, t.weight])).toEqual([["arithmetic", 1]])
  })

  it("refuses duplicate names, an unnamed kind used twice, weights ≤ 0, nested and empty mixtures, naming the key path", async () => {
    expect(await problemsOf(mixture([{ name: "a", task: arith }, { name: "a", task: countdown }]))).toMatch(/task\.tasks\[1\]\.name.*"a" is already the name of tasks\[0\]/)
    expect(await problemsOf(mixture([{ task: arith }, { task: { ...arith, ops: ["-"] } }]))).toMatch(/task\.tasks\[0\]\.name.*2 tasks are of kind "arithmetic"/)
    expect(await problemsOf(mixture([{ name: "a", weight: 0, task: arith }]))).toMatch(/task\.tasks\[0\]\.weight/)
    expect(await problemsOf(mixture([{ name: "a", task: mixture([{ task: arith }]) }]))).toMatch(/task\.tasks\[0\]\.task/)
    expect(await problemsOf(mixture([]))).toMatch(/task\.tasks/)
    expect(await problemsOf(mixture([{ name: "a/b", task: arith }]))).toMatch(/task\.tasks\[0\]\.name/)
  })
})

describe("recipe: task names in stages", () => {
  it("a reward routed to, or direct rows drawn from, a task the recipe lacks are refused before any stage runs, naming the key", async () => {
    const root = tempDir("mixture-routes")
    const file = writeRecipe(root, testRecipe({
      name: "mixture-routes",
      task: mixture([{ name: "arith", task: arith }, { name: "cd", task: countdown }]),
      corpus: { count: 8 },
      tokenizer: { ...tokenizer, splitDigits: true },
      stages: [
        { stage: "grpo", config: { steps: 1, promptsPerStep: 2, groupSize: 2, sampling: { maxNewTokens: 4, temperature: 1 }, rewards: [{ plugin: "@r1flow/reward-format" }, { plugin: "@r1flow/reward-countdown", tasks: ["cd", "countdown"] }], update: {} } },
        { stage: "rejection-sampling", config: { prompts: 2, samples: 2, sampling: { maxNewTokens: 4, temperature: 1 }, rewards: [{ plugin: "@r1flow/reward-math-accuracy", tasks: ["arithmetic"] }], directShare: 0.1, directTasks: ["arith", "math"] } }
      ]
    }))
    const lines: Array<string> = []
    const err = (await runFail(Run.run(file, { overrides: [], log: (l) => lines.push(l) }))) as { _tag: string; problems?: ReadonlyArray<string> }
    expect(err._tag).toBe("ConfigError")
    expect(err.problems).toEqual([`stages[0].config.rewards[1].tasks[1]: "countdown" is not a task of this recipe (its tasks: arith, cd)`])
    expect(lines.filter((l) => l.startsWith("── stage"))).toEqual([])
    const fixed = JSON.parse(readFileSync(file, "utf8"))
    fixed.stages[0].config.rewards[1].tasks = ["cd"]
    writeFileSync(file, JSON.stringify(fixed))
    const err2 = (await runFail(Run.run(file, { overrides: [], log: () => {} }))) as { problems?: ReadonlyArray<string> }
    expect(err2.problems).toEqual([
      `stages[1].config.rewards[0].tasks[0]: "arithmetic" is not a task of this recipe (its tasks: arith, cd)`,
      `stages[1].config.directTasks[1]: "math" is not a task of this recipe (its tasks: arith, cd)`
    ])
  }, 60_000)
})

describe("data: a mixture's rows", () => {
  it("tags every row with its task, prefixes ids in a mixture only, concatenates test splits and shares the corpus by weight", async () => {
    const task = await decodeTask(mixture([{ name: "arith", weight: 3, task: arith }, { name: "cd", task: countdown }]))
    const data = await run(Data.build(task, 5, { corpusSize: 10 }))
    // The independent reference: each generator called on its own, as a single task would be.
    const a = await run(Arithmetic.generate({ seed: 5, digits: [1, 2], ops: ["+"], count: 3, split: "test" }))
    const c = await run(Countdown.generate({ seed: 5, numbers: 3, maxTarget: 30, count: 2, split: "test" }))
    expect(data.test.map((r) => [r.id, r.question, r.metadata.task])).toEqual([
      ...a.map((r) => [`arith/${r.id}`, r.question, "arith"]),
      ...c.map((r) => [`cd/${r.id}`, r.question, "cd"])
    ])
    expect(data.train.filter((r) => r.metadata.task === "arith")).toHaveLength(12)
    expect(data.train.filter((r) => r.metadata.task === "cd")).toHaveLength(10)
    expect(new Set(data.train.map((r) => r.id)).size).toBe(22)
    // 10 · 3/4 = 7.5 → 7, 10 · 1/4 = 2.5 → 2, the one left over to the first.
    expect(Data.corpusShares(Recipe.tasksOf(task), 10)).toEqual([8, 2])
    expect(data.corpus).toHaveLength(10)
    // A task named as its rows' own id prefix keeps their ids: `countdown/…`, not `countdown/countdown/…`.
    const named = await run(Data.build(await decodeTask(mixture([{ name: "arith", task: arith }, { name: "countdown", task: countdown }])), 5, { corpusSize: 0 }))
    expect(named.test.filter((r) => r.metadata.task === "countdown").map((r) => r.id)).toEqual(c.map((r) => r.id))
    expect(c.every((r) => r.id.startsWith("countdown/"))).toBe(true)
    const single = await run(Data.build(await decodeTask(arith), 5, { corpusSize: 0 }))
    expect(single.test.map((r) => [r.id, r.question, r.metadata])).toEqual(a.map((r) => [r.id, r.question, { ...r.metadata, task: "arithmetic" }]))
  })
})

describe("Prompts.taskSampler", () => {
  const rows = (task: string, n: number) => Array.from({ length: n }, (_, i) => ({ id: `${task}-${i}`, question: "", answer: "", metadata: { task } }))
  const parts = [...rows("a", 7), ...rows("b", 5), ...rows("c", 3)]
  const task = { kind: "mixture", tasks: [{ name: "a", weight: 3, task: arith }, { name: "b", weight: 1, task: arith }, { name: "c", weight: 0.5, task: arith }] } as const as Recipe.Task

  it("draws tasks in proportion to their weights", () => {
    const drawn = Prompts.taskSampler(task, parts, 1, "s")(0, 9000)
    const share = (t: string) => drawn.filter((r) => r.metadata.task === t).length / drawn.length
    // Binomial std at n = 9000 is under 0.006; 0.02 is over 3 std.
    expect(share("a")).toBeCloseTo(3 / 4.5, 1)
    expect(Math.abs(share("a") - 3 / 4.5)).toBeLessThan(0.02)
    expect(Math.abs(share("b") - 1 / 4.5)).toBeLessThan(0.02)
    expect(Math.abs(share("c") - 0.5 / 4.5)).toBeLessThan(0.02)
  })

  it("each task walks its own permutations: every row once per epoch of that task", () => {
    const drawn = Prompts.taskSampler(task, parts, 1, "s")(0, 600)
    const ofA = drawn.filter((r) => r.metadata.task === "a").map((r) => r.id)
    for (let e = 0; e + 7 <= ofA.length; e += 7) expect(new Set(ofA.slice(e, e + 7)).size).toBe(7)
  })

  it("is deterministic and resumable: the draws at a cursor do not depend on what was drawn before", () => {
    const ids = (xs: ReadonlyArray<{ readonly id: string }>) => xs.map((r) => r.id)
    const whole = ids(Prompts.taskSampler(task, parts, 1, "s")(0, 700))
    const resumed = Prompts.taskSampler(task, parts, 1, "s")
    expect(ids(resumed(300, 400))).toEqual(whole.slice(300))
    // Going back (another stream position) and on again.
    expect(ids(resumed(10, 5))).toEqual(whole.slice(10, 15))
    const stepwise = Prompts.taskSampler(task, parts, 1, "s")
    const steps = Array.from({ length: 70 }, (_, s) => ids(stepwise(s * 10, 10))).flat()
    expect(steps).toEqual(whole)
    expect(ids(Prompts.taskSampler(task, parts, 2, "s")(0, 50))).not.toEqual(whole.slice(0, 50))
  })

  it("a single task draws exactly as Prompts.sampler", () => {
    const single = arith as unknown as Recipe.Task
    const xs = rows("arithmetic", 9)
    expect(Prompts.taskSampler(single, xs, 4, "s")(3, 40)).toEqual(Prompts.sampler(xs, 4, "s")(3, 40))
  })
})

describe("a mixed arithmetic + countdown run", () => {
  it("routes each reward to its task's rows only, records per-task metrics, and evaluates per task", async () => {
    const root = tempDir("mixture")
    const seen = join(root, "seen.jsonl")
    // Appends the task of every row it is given; fails its call (and the run, onError "fail") on a row not of "cd".
    writeFileSync(
      join(root, "record.mjs"),
      `import { appendFileSync } from "node:fs"
       import { Schema } from ${JSON.stringify(effectUrl)}
       export default { kind: "reward", name: "record", version: "1.0.0", description: "test", config: Schema.Struct({}),
         make: () => ({ score: (input) => {
           for (const m of input.metadata) appendFileSync(${JSON.stringify(seen)}, JSON.stringify(m.task ?? null) + "\\n")
           if (input.metadata.some((m) => m.task !== "cd")) throw new Error("saw a row of another task")
           return new Float32Array(input.rows).fill(0.5)
         } }) }`
    )
    const file = writeRecipe(root, testRecipe({
      name: "mixture",
      task: mixture([{ name: "arith", weight: 1, task: arith }, { name: "cd", weight: 1, task: countdown }]),
      corpus: { count: 24 },
      tokenizer: { ...tokenizer, splitDigits: true },
      stages: [
        {
          stage: "grpo",
          name: "rl",
          config: {
            steps: 2, promptsPerStep: 4, groupSize: 2, logEvery: 1,
            sampling: { maxNewTokens: 5, temperature: 1 },
            rewards: [
              { plugin: "@r1flow/reward-math-accuracy", name: "accuracy", tasks: ["arith"] },
              { plugin: "@r1flow/reward-countdown", name: "countdown", tasks: ["cd"] },
              { plugin: "./record.mjs", tasks: ["cd"], weight: 0 },
              { plugin: "@r1flow/reward-format", name: "format", weight: 0.1 }
            ],
            update: { optimizer: { learningRate: 1e-3 } }
          }
        },
        { stage: "eval", name: "final", config: { samples: 2, sampling: { maxNewTokens: 4, temperature: 1 } } },
        // One sample a problem: the record's samples are every completion, to recompute language consistency from.
        { stage: "eval", name: "lang", config: { samples: 1, sampling: { maxNewTokens: 12, temperature: 1 } } }
      ]
    }))
    const lines: Array<string> = []
    const result = await run(Run.run(file, { overrides: [], log: (l) => lines.push(l) }))

    const files = readdirSync(result.dir.rollouts).filter((f) => f.endsWith(".parquet")).sort()
    expect(files).toHaveLength(2)
    const rows = files.flatMap((f) => {
      const table = tableFromIPC(readParquet(new Uint8Array(readFileSync(join(result.dir.rollouts, f)))).intoIPCStream())
      return table.toArray().map((r) => ({
        task: JSON.parse(String(r.metadata)).task as string,
        id: String(r.id),
        accuracy: r["reward_accuracy"] as number | null,
        countdown: r["reward_countdown"] as number | null,
        record: r["reward_record"] as number | null,
        format: r["reward_format"] as number | null
      }))
    })
    const scored = (v: number | null) => v !== null && Number.isFinite(v)
    const byTask = (t: string) => rows.filter((r) => r.task === t)
    expect(byTask("arith").length).toBeGreaterThan(0)
    expect(byTask("cd").length).toBeGreaterThan(0)
    expect(byTask("arith").length + byTask("cd").length).toBe(rows.length)
    for (const r of byTask("arith")) {
      expect(r.id.startsWith("arith/")).toBe(true)
      expect(scored(r.countdown), r.id).toBe(false)
      expect(scored(r.record), r.id).toBe(false)
      expect(scored(r.accuracy), r.id).toBe(true)
    }
    for (const r of byTask("cd")) {
      expect(r.id.startsWith("cd/")).toBe(true)
      expect(scored(r.accuracy), r.id).toBe(false)
      expect(scored(r.countdown), r.id).toBe(true)
      expect(r.record).toBe(0.5)
    }
    for (const r of rows) expect(scored(r.format)).toBe(true)
    // The recording reward saw the cd rows, each once, and nothing else.
    const sawTasks = readFileSync(seen, "utf8").trim().split("\n").map((l) => JSON.parse(l))
    expect(sawTasks).toEqual(byTask("cd").map(() => "cd"))

    // Per-task metrics: each task's mean reward, recomputed here from the rollouts (total = Σ w·r).
    const { entries } = Metrics.readJsonl(result.dir.metrics)
    const steps = entries.filter((e) => e.values["reward"] !== undefined)
    expect(steps).toHaveLength(2)
    const perStep = files.map((f) => tableFromIPC(readParquet(new Uint8Array(readFileSync(join(result.dir.rollouts, f)))).intoIPCStream()).toArray())
    steps.forEach((e, s) => {
      for (const task of ["arith", "cd"]) {
        const own = perStep[s].filter((r) => JSON.parse(String(r.metadata)).task === task)
        if (own.length === 0) continue
        const total = own.map((r) => (task === "arith" ? Number(r["reward_accuracy"]) : Number(r["reward_countdown"])) + 0.1 * Number(r["reward_format"]))
        expect(e.values[`task/${task}/reward_mean`]).toBeCloseTo(total.reduce((a, b) => a + b, 0) / total.length, 5)
        expect(e.values[`task/${task}/format_mean`]).toBeCloseTo(own.reduce((a, r) => a + Number(r["reward_format"]), 0) / own.length, 5)
      }
      expect(e.values["task/arith/countdown_mean"]).toBeUndefined()
      expect(e.values["task/cd/accuracy_mean"]).toBeUndefined()
    })

    // Per-task eval: each task's problems, and rates that add up to the whole.
    const record = JSON.parse(readFileSync(join(result.dir.evals, "final.json"), "utf8"))
    expect(record.problems).toBe(5)
    expect(Object.keys(record.tasks)).toEqual(["arith", "cd"])
    expect(record.tasks.arith.problems).toBe(3)
    expect(record.tasks.cd.problems).toBe(2)
    const weighted = (k: string) => (3 * record.tasks.arith[k] + 2 * record.tasks.cd[k]) / 5
    for (const k of ["accuracy", "consAccuracy", "formatRate", "meanLength"]) expect(weighted(k)).toBeCloseTo(record[k], 10)
    const last: Record<string, number> = Object.assign({}, ...entries.map((e) => e.values))
    for (const t of ["arith", "cd"]) for (const k of ["accuracy", "cons_accuracy", "format_rate", "mean_length"]) expect(last[`eval/final/${t}/${k}`]).toBeDefined()
    expect(lines.some((l) => l.startsWith("[final]") && l.includes("arith:") && l.includes("cd:"))).toBe(true)

    // Language consistency: the plugin's trigram score (no completion prefix: r1-zero leaves <think> to the
    // model), averaged over the completions it scores, absent where it scores none; per task over its own.
    const lang = JSON.parse(readFileSync(join(result.dir.evals, "lang.json"), "utf8"))
    expect(lang.samples).toHaveLength(5)
    const meanLanguage = (samples: ReadonlyArray<{ completion: string }>) => {
      const scores = samples.map((x) => Trigram.consistency(Scripts.chainOfThought("", x.completion), "en")).filter((x) => !Number.isNaN(x))
      return scores.length === 0 ? undefined : scores.reduce((a, b) => a + b, 0) / scores.length
    }
    const expectLanguage = (got: number | undefined, want: number | undefined) => (want === undefined ? expect(got).toBeUndefined() : expect(got).toBeCloseTo(want, 6))
    expectLanguage(lang.languageConsistency, meanLanguage(lang.samples))
    expectLanguage(lang.tasks.arith.languageConsistency, meanLanguage(lang.samples.slice(0, 3)))
    expectLanguage(lang.tasks.cd.languageConsistency, meanLanguage(lang.samples.slice(3)))
    expectLanguage(last["eval/lang/language_consistency"], lang.languageConsistency)
  }, 120_000)
})
