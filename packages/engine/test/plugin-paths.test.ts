/**
 * Plugin paths in a recipe (stages and rewards alike) resolve from the recipe file's directory, as the
 * docs say, not from the working directory the run was started in.
 */
import { Backend } from "@r1flow/backend"
import { Metrics } from "@r1flow/core"
import { beforeAll, describe, expect, it } from "vitest"
import * as Run from "../src/Run.js"
import { run, tempDir } from "./helpers.js"
import { arithmetic, charsReward, markStage, testRecipe, writeModule, writeRecipe } from "./support/recipes.js"

beforeAll(async () => {
  await Backend.init()
})

describe("plugin paths", () => {
  it("a stage plugin and a reward plugin named by relative paths load from the recipe's directory, not the working directory", async () => {
    const root = tempDir("plugin-paths")
    writeModule(root, "rewards/chars.mjs", charsReward)
    writeModule(root, "stages/mark.mjs", markStage("__r1flowMarked"))
    const file = writeRecipe(root, testRecipe({
      name: "plugin-paths",
      task: arithmetic(8, 2),
      corpus: { count: 8 },
      stages: [
        { stage: "./stages/mark.mjs", name: "marked" },
        { stage: "grpo", config: { steps: 1, promptsPerStep: 1, groupSize: 2, sampling: { maxNewTokens: 4, temperature: 1 }, rewards: [{ plugin: "./rewards/chars.mjs" }] } }
      ]
    }))
    // Neither path resolves from here.
    expect(process.cwd()).not.toBe(root)
    const result = await run(Run.run(file, { log: () => {} }))
    expect((globalThis as { __r1flowMarked?: string }).__r1flowMarked).toBe("marked")
    const { entries } = Metrics.readJsonl(result.dir.metrics)
    expect(entries.at(-1)?.values["rewards/chars/mean"]).toBeGreaterThanOrEqual(0)
  }, 120_000)
})
