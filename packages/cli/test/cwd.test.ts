/**
 * A run started from a directory outside the project (no node_modules there): the built-in reward
 * plugins still load, in the process and in their worker threads, from where r1flow is installed.
 */
import { mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { arithmetic, effectUrl, engine, pretrain, tempDir, tempRun, tinyRecipe } from "./support/launch.js"

describe("working directory", () => {
  it("a recipe naming reward plugins by package runs from a directory that cannot resolve them", () => {
    const { base, file } = tempRun("cwd", tinyRecipe({
      name: "tiny-cwd",
      checkpoint: undefined,
      stages: [
        pretrain(2),
        {
          stage: "grpo",
          config: {
            steps: 1, promptsPerStep: 1, groupSize: 2, sampling: { maxNewTokens: 4, temperature: 1 },
            rewards: [{ plugin: "@r1flow/reward-format", config: { mode: "tag-count" } }, { plugin: "@r1flow/reward-math-accuracy" }]
          }
        }
      ]
    }))
    const r = engine({ command: "run", arg: file }, { cwd: base })
    expect(r.stderr + r.stdout, r.stderr).toContain("DIR ")
    expect(r.status).toBe(0)
  }, 150_000)

  it("reward and stage plugins given as relative paths resolve from the recipe's directory, whatever the working directory", () => {
    const { base, file } = tempRun("cwd", tinyRecipe({
      name: "tiny-paths",
      task: arithmetic(8, 2),
      corpus: { count: 8 },
      checkpoint: undefined,
      stages: [
        { stage: "./plugins/noop.mjs" },
        { stage: "grpo", config: { steps: 1, promptsPerStep: 1, groupSize: 2, sampling: { maxNewTokens: 4, temperature: 1 }, rewards: [{ plugin: "./plugins/chars.mjs" }] } }
      ]
    }), "recipe.json")
    const elsewhere = tempDir("elsewhere")
    mkdirSync(join(base, "plugins"))
    writeFileSync(join(base, "plugins", "chars.mjs"), `import { Schema } from ${JSON.stringify(effectUrl)}
export default { kind: "reward", name: "chars", version: "1.0.0", description: "completion length", config: Schema.Struct({}),
  make: () => ({ score: (input) => Float32Array.from(input.completions, (c) => c.length) }) }`)
    writeFileSync(join(base, "plugins", "noop.mjs"), `import { Effect, Schema } from ${JSON.stringify(effectUrl)}
export default { kind: "stage", name: "noop", version: "1.0.0", description: "does nothing", config: Schema.Struct({}),
  make: () => ({ kind: "noop", run: () => Effect.void }) }`)
    const r = engine({ command: "run", arg: file }, { cwd: elsewhere })
    expect(r.stderr + r.stdout, r.stderr).toContain("DIR ")
    expect(r.status).toBe(0)
  }, 150_000)
})
