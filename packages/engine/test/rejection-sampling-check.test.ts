/**
 * The rejection-sampling stage's rewards are checked before the first stage runs, as GRPO's are: a typo in
 * a reward entry of R1's fourth stage costs nothing, not the stages before it.
 */
import { readdirSync, readFileSync } from "node:fs"
import { describe, expect, it } from "vitest"
import * as Run from "../src/Run.js"
import { runFail, tempDir, tinyOverrides } from "./helpers.js"

const recipe = JSON.parse(readFileSync(Run.resolveRecipe("r1"), "utf8")) as { stages: Array<{ stage: string }> }
const at = recipe.stages.findIndex((s) => s.stage === "rejection-sampling")

describe("rejection sampling's rewards are checked before the run", () => {
  it("an unknown key in a rejection-sampling reward entry is refused before any stage starts", async () => {
    const runs = tempDir("rs-check")
    const lines: Array<string> = []
    const error = (await runFail(Run.run(Run.resolveRecipe("r1"), {
      overrides: [...tinyOverrides(recipe, runs), `stages.${at}.config.rewards.1.wieght=0.5`],
      log: (l) => lines.push(l)
    }))) as { _tag: string; problems?: ReadonlyArray<string> }
    expect(error._tag).toBe("ConfigError")
    expect(error.problems).toEqual([`stages[${at}].config.rewards[1].wieght: unknown key (did you mean "weight"?)`])
    expect(lines.filter((l) => l.startsWith("── stage"))).toEqual([])
    expect(readdirSync(runs)).toEqual([])
  }, 120_000)
})
