/**
 * The GRPO stage's pipeline end to end in recipes: dynamic sampling drawing until each step's batch is
 * full, user stages loaded from a path and from a package at their named points, and a user stage whose
 * input the pipeline does not give refused before the run starts.
 */
import { Backend } from "@r1flow/backend"
import { Metrics } from "@r1flow/core"
import { existsSync, readdirSync } from "node:fs"
import { join } from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import * as Run from "../src/Run.js"
import { run, runFail, tempDir } from "./helpers.js"
import { effectUrl, testRecipe, writeModule, writeRecipe } from "./support/recipes.js"

beforeAll(async () => {
  await Backend.init()
})

const arrowUrl = import.meta.resolve("apache-arrow")

/** A test-sized recipe in `root` (fresh tiny policy, no pretraining): one GRPO stage with `grpo` merged into its config. */
const recipe = (root: string, grpo: Record<string, unknown>) =>
  writeRecipe(root, testRecipe({
    name: "grpo-pipeline",
    corpus: { count: 8 },
    stages: [{
      stage: "grpo",
      name: "rl",
      config: {
        steps: 2, promptsPerStep: 2, groupSize: 2, logEvery: 1, sampling: { maxNewTokens: 4, temperature: 1 },
        rewards: [{ plugin: "./rewards/parity.mjs" }],
        ...grpo
      }
    }]
  }))

/** A reward with a known spread: even groups score 1 on every row (zero variance), odd groups 0, 1 by row. */
const writeParity = (root: string) =>
  writeModule(root, "rewards/parity.mjs", `import { Schema } from ${JSON.stringify(effectUrl)}
export default { kind: "reward", name: "parity", version: "1.0.0", description: "even groups equal, odd groups mixed", config: Schema.Struct({}),
  make: () => ({ score: (input) => Float32Array.from(input.groupIds, (g, i) => (g % 2 === 0 ? 1 : i % 2)) }) }`)

/**
 * A pipeline-stage plugin as a user writes one in plain JavaScript: a stage is a name, the columns it reads
 * (`input`) and writes (`output`) and `run`. `body` maps the batch `b` (and `config`) to the batch it returns.
 */
const userStage = (name: string, reads: string, config: string, body: string) => `import { Effect, Schema } from ${JSON.stringify(effectUrl)}
import { Field, Float32, Int32, Utf8, RecordBatch, Schema as ArrowSchema, Struct, makeData } from ${JSON.stringify(arrowUrl)}
const reads = new ArrowSchema([${reads}])
// b with its Float32 column name replaced by values: a new batch, the input untouched.
const replace = (b, name, values) => {
  const i = b.schema.fields.findIndex((f) => f.name === name)
  const children = b.data.children.slice()
  children[i] = makeData({ type: new Float32(), length: b.numRows, data: values })
  return new RecordBatch(b.schema, makeData({ type: new Struct(b.schema.fields), length: b.numRows, nullCount: 0, children }))
}
export default { kind: "pipeline-stage", name: ${JSON.stringify(name)}, version: "1.0.0", description: "a test stage", config: Schema.Struct({ ${config} }),
  make: (config) => ({ name: ${JSON.stringify(name)}, input: reads, output: reads, run: (b) => Effect.sync(() => ${body}) }) }`

describe("grpo pipeline in a recipe", () => {
  it("dynamic sampling: every step draws until targetGroups groups have reward variance, with fresh prompts and group ids per draw", async () => {
    const root = tempDir("dynamic-sampling")
    writeParity(root)
    // Records what each draw scored (user stages after the rewards run on every draw).
    writeModule(root, "stages/spy.mjs", userStage("spy", 'new Field("id", new Utf8(), false), new Field("group_id", new Int32(), false)', "",
      "((globalThis.__r1flowDraws ??= []).push({ groups: [...new Set(b.getChild('group_id').toArray())], prompts: [...new Set(Array.from(b.getChild('id').toArray(), (id) => id.split('#')[0]))] }), b)"))
    const result = await run(Run.run(recipe(root, { dynamicSampling: { targetGroups: 2, maxDraws: 3 }, afterRewards: [{ plugin: "./stages/spy.mjs" }] }), { log: () => {} }))
    const { entries } = Metrics.readJsonl(result.dir.metrics)
    // Attempt 0 gives groups 0 (dropped: equal rewards) and 1, attempt 1 groups 2 (dropped) and 3: full.
    expect(entries.map((e) => e.values["dynamic_sampling/dropped_groups"])).toEqual([2, 2])
    expect(entries.map((e) => e.values.frac_reward_zero_std)).toEqual([0, 0])
    const draws = (globalThis as { __r1flowDraws?: Array<{ groups: Array<number>; prompts: Array<string> }> }).__r1flowDraws ?? []
    expect(draws.map((d) => d.groups)).toEqual([[0, 1], [2, 3], [0, 1], [2, 3]])
    // Two fresh prompts per draw: the data cursor moved past every prompt drawn, kept or not.
    expect(new Set(draws.flatMap((d) => d.prompts)).size).toBe(8)
  }, 120_000)

  it("user stages from a path (a reward shaper) and from a package (an advantage estimator) run at their points", async () => {
    const root = tempDir("user-stages")
    writeParity(root)
    writeModule(root, "stages/bonus.mjs", userStage("bonus", 'new Field("reward", new Float32(), true)', "bonus: Schema.Finite",
      "replace(b, 'reward', Float32Array.from(b.getChild('reward').toArray(), (r) => r + config.bonus))"))
    writeModule(root, "node_modules/r1flow-const-advantage/package.json", JSON.stringify({ name: "r1flow-const-advantage", version: "1.0.0", type: "module", exports: "./index.mjs", keywords: ["r1flow-plugin"] }))
    writeModule(root, "node_modules/r1flow-const-advantage/index.mjs", userStage("const-advantage", 'new Field("advantage", new Float32(), false)', "value: Schema.Finite",
      "replace(b, 'advantage', new Float32Array(b.numRows).fill(config.value))"))
    const file = recipe(root, {
      afterRewards: [{ plugin: "./stages/bonus.mjs", config: { bonus: 0.5 } }],
      afterAdvantages: [{ plugin: "r1flow-const-advantage", config: { value: 0.25 } }]
    })
    const result = await run(Run.run(file, { log: () => {} }))
    const { entries } = Metrics.readJsonl(result.dir.metrics)
    expect(entries.length).toBe(2)
    for (const e of entries) {
      // The shaper rewrote the total (what advantages and metrics see), not the reward's own column.
      expect(e.values.reward).toBeCloseTo(e.values["rewards/parity/mean"] + 0.5, 6)
      // On-policy (ρ = 1) with Â = 0.25 on every row, the grpo loss is −mean(Â).
      expect(e.values.loss).toBeCloseTo(-0.25, 4)
    }
  }, 120_000)

  it("a user stage that reads a column nothing before it writes is refused before the run starts, naming it", async () => {
    const root = tempDir("user-stage-gap")
    writeParity(root)
    // Placed after the rollout, it reads the total reward, which only the reward stage after it writes.
    writeModule(root, "stages/early.mjs", userStage("early", 'new Field("reward", new Float32(), true)', "", "b"))
    const lines: Array<string> = []
    const error = await runFail(Run.run(recipe(root, { afterRollout: [{ plugin: "./stages/early.mjs" }] }), { log: (l) => lines.push(l) })) as { _tag: string; problems?: ReadonlyArray<string> }
    expect(error._tag).toBe("ConfigError")
    expect(error.problems).toEqual(['stages[0].config: stage "early" needs what stage "rollout" does not give: missing column "reward" (expected Float32)'])
    expect(lines.filter((l) => l.startsWith("── stage"))).toEqual([])
    expect(existsSync(join(root, "runs")) ? readdirSync(join(root, "runs")) : []).toEqual([])
  }, 60_000)
})
