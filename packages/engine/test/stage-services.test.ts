/**
 * What a recipe stage runs with: its whole config decoded before the run (a key the run sets is refused,
 * not overridden), the run's `Rng` and `Metrics` as services it `yield*`s, and its resume state as an argument.
 */
import { Backend } from "@r1flow/backend"
import { Metrics, Rng } from "@r1flow/core"
import { readdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import * as Run from "../src/Run.js"
import { run, runFail, tempDir, tinyOverrides } from "./helpers.js"

beforeAll(async () => {
  await Backend.init()
})

const effectUrl = import.meta.resolve("effect")
const coreUrl = import.meta.resolve("@r1flow/core")

describe("recipe stages", () => {
  it("a key the run sets (the update's padId) is refused before the run, naming who sets it", async () => {
    const runs = tempDir("set-by-run")
    const recipe = JSON.parse(readFileSync(Run.resolveRecipe("r1-zero"), "utf8")) as { stages: Array<{ stage: string }> }
    const lines: Array<string> = []
    const error = (await runFail(Run.run(Run.resolveRecipe("r1-zero"), { overrides: [...tinyOverrides(recipe, runs), "stages.2.config.update.padId=0"], log: (l) => lines.push(l) }))) as { _tag: string; problems?: ReadonlyArray<string> }
    expect(error._tag).toBe("ConfigError")
    expect(error.problems).toEqual(["stages[2].config.update.padId: set by the run (the tokenizer's end-of-text id), not by the recipe, got 0"])
    expect(lines.filter((l) => l.startsWith("── stage"))).toEqual([])
    expect(readdirSync(runs)).toEqual([])
  }, 60_000)

  it("a stage plugin yields the run's Rng and Metrics services and is handed no resume state in a fresh run", async () => {
    const root = tempDir("stage-services")
    writeFileSync(join(root, "draws.mjs"), `import { Effect, Option, Schema } from ${JSON.stringify(effectUrl)}
import { Metrics, Rng } from ${JSON.stringify(coreUrl)}
export default { kind: "stage", name: "draws", version: "1.0.0", description: "records a draw", config: Schema.Struct({}),
  make: () => ({ kind: "draws", run: (label, resume) => Effect.gen(function*() {
    const rng = yield* Rng.Rng
    const metrics = yield* Metrics.Metrics
    yield* metrics.record(0, { [label + "/draw"]: rng.stream(label + "/x").nextU32(), [label + "/resumed"]: Option.isSome(resume) ? 1 : 0 })
  }) }) }`)
    const file = join(root, "recipe.json")
    writeFileSync(file, JSON.stringify({
      name: "stage-services",
      seed: 5,
      runsDir: join(root, "runs"),
      task: { kind: "arithmetic", digits: [1, 2], ops: ["+"], train: 8, test: 2 },
      tokenizer: { kind: "compact", base: "cl100k_base", size: 512 },
      model: { dModel: 16, nLayers: 1, nHeads: 2, nKvHeads: 1, dFf: 32, maxSeqLen: 128 },
      stages: [{ stage: "./draws.mjs", name: "d" }]
    }))
    const result = await run(Run.run(file, { log: () => {} }))
    const { entries } = Metrics.readJsonl(result.dir.metrics)
    expect(entries).toEqual([{ step: 0, values: { "d/draw": Rng.make(5, "d/x").nextU32(), "d/resumed": 0 } }])
  }, 60_000)
})
