/**
 * Plugin paths in a recipe (stages and rewards alike) resolve from the recipe file's directory, as the
 * docs say, not from the working directory the run was started in.
 */
import { Backend } from "@r1flow/backend"
import { Metrics } from "@r1flow/core"
import { mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import * as Run from "../src/Run.js"
import { run, tempDir } from "./helpers.js"

beforeAll(async () => {
  await Backend.init()
})

const effectUrl = import.meta.resolve("effect")

describe("plugin paths", () => {
  it("a stage plugin and a reward plugin named by relative paths load from the recipe's directory, not the working directory", async () => {
    const root = tempDir("plugin-paths")
    mkdirSync(join(root, "rewards"))
    mkdirSync(join(root, "stages"))
    writeFileSync(join(root, "rewards", "chars.mjs"), `import { Schema } from ${JSON.stringify(effectUrl)}
export default { kind: "reward", name: "chars", version: "1.0.0", description: "completion length", config: Schema.Struct({}),
  make: () => ({ score: (input) => Float32Array.from(input.completions, (c) => c.length) }) }`)
    writeFileSync(join(root, "stages", "mark.mjs"), `import { Effect, Schema } from ${JSON.stringify(effectUrl)}
export default { kind: "stage", name: "mark", version: "1.0.0", description: "records that it ran", config: Schema.Struct({}),
  make: () => ({ kind: "mark", run: (label) => Effect.sync(() => { globalThis.__r1flowMarked = label }) }) }`)
    const file = join(root, "recipe.json")
    writeFileSync(file, JSON.stringify({
      name: "plugin-paths",
      seed: 1,
      runsDir: join(root, "runs"),
      task: { kind: "arithmetic", digits: [1, 2], ops: ["+"], train: 8, test: 2 },
      corpus: { count: 8 },
      tokenizer: { kind: "compact", base: "cl100k_base", size: 512 },
      model: { dModel: 16, nLayers: 1, nHeads: 2, nKvHeads: 1, dFf: 32, maxSeqLen: 128 },
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
