/**
 * A recipe's whole config is checked before anything runs: the nested sections a stage decodes only
 * when it starts (`update`, `rewards`, each reward plugin's own `config`) included, with unknown keys
 * refused and named with the nearest valid key. A refused recipe leaves no run directory behind.
 */
import { readdirSync, readFileSync } from "node:fs"
import { describe, expect, it } from "vitest"
import * as Run from "../src/Run.js"
import { runFail, tempDir, tinyOverrides } from "./helpers.js"

const recipe = JSON.parse(readFileSync(Run.resolveRecipe("r1-zero"), "utf8")) as { stages: Array<{ stage: string }> }

/**
 * Runs r1-zero (test-sized) with `sets`, checks that it was refused before any stage started and left the runs
 * folder empty, and returns its error.
 */
const refused = async (...sets: Array<string>) => {
  const runs = tempDir("preflight")
  const lines: Array<string> = []
  const error = await runFail(Run.run(Run.resolveRecipe("r1-zero"), { overrides: [...tinyOverrides(recipe, runs), ...sets], log: (l) => lines.push(l) }))
  expect(lines.filter((l) => l.startsWith("── stage"))).toEqual([])
  expect(readdirSync(runs)).toEqual([])
  return error as { _tag: string; message: string; problems?: ReadonlyArray<string> }
}

describe("the whole recipe is checked before the first stage runs", () => {
  it("an unknown key in the GRPO stage's update section names the key it meant", async () => {
    const error = await refused("stages.2.config.update.loss.epsilon_high=0.28")
    expect(error._tag).toBe("ConfigError")
    expect(error.problems).toEqual(['stages[2].config.update.loss.epsilon_high: unknown key (did you mean "epsilonHigh"?)'])
  }, 60_000)

  it("an unknown key in a reward entry names the key it meant", async () => {
    const error = await refused("stages.2.config.rewards.1.wieght=0.5")
    expect(error._tag).toBe("ConfigError")
    expect(error.problems).toEqual(['stages[2].config.rewards[1].wieght: unknown key (did you mean "weight"?)'])
  }, 60_000)

  it("a reward plugin that does not exist is named with its place in the recipe", async () => {
    const error = await refused("stages.2.config.rewards.1.plugin=@acme/no-such-reward")
    expect(error._tag).toBe("PluginError")
    expect(error.message).toMatch(/^stages\[2\]\.config\.rewards\[1\]\.plugin: cannot find it/)
  }, 60_000)

  it("a bad value or an unknown key in a reward plugin's own config is refused by the plugin's schema", async () => {
    const error = await refused("stages.2.config.rewards.1.config.mode=loose")
    expect(error._tag).toBe("ConfigError")
    expect(error.problems).toHaveLength(1)
    expect(error.problems?.[0]).toMatch(/^stages\[2\]\.config\.rewards\[1\]\.config\.mode: expected .*, got "loose"$/)
    const typo = await refused("stages.2.config.rewards.1.config.mdoe=soft")
    expect(typo.problems).toContain('stages[2].config.rewards[1].config.mdoe: unknown key (did you mean "mode"?)')
  }, 60_000)

  it("model.lora: a bad rank or target, and a reference refresh it cannot have, are refused by key", async () => {
    const rank = await refused('model.lora={"rank":0,"alpha":16}')
    expect(rank.problems?.[0]).toMatch(/^model\.lora\.rank: /)
    const target = await refused('model.lora={"rank":4,"alpha":8,"targets":["q","qkv"]}')
    expect(target.problems?.[0]).toMatch(/^model\.lora\.targets\[1\]: expected .*"q".*, got "qkv"$/)
    const sync = await refused('model.lora={"rank":4,"alpha":8}', "stages.2.config.update.refSyncSteps=3")
    expect(sync.problems).toEqual(["stages[2].config.update.refSyncSteps: 3, but must be 0 under model.lora (the reference is the base with the adapters off, which never moves)"])
  }, 60_000)
})
