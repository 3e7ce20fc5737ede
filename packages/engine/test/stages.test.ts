import { Backend } from "@r1flow/backend"
import { Metrics } from "@r1flow/core"
import { Effect, Schema } from "effect"
import { beforeAll, describe, expect, it } from "vitest"
import * as Run from "../src/Run.js"
import * as Grpo from "../src/stages/grpo.js"
import { run, tempDir } from "./helpers.js"
import { arithmetic, testRecipe, tokenizer, writeRecipe } from "./support/recipes.js"

beforeAll(async () => {
  await Backend.init()
})

/** A test-sized recipe (fresh tiny policy, no pretraining) with the given stages, written to a temp folder. */
const recipeFile = (prefix: string, stages: ReadonlyArray<unknown>) =>
  writeRecipe(tempDir(prefix), testRecipe({
    name: prefix,
    task: arithmetic(16, 2, ["+", "-"]),
    corpus: { count: 48 },
    tokenizer: { ...tokenizer, splitDigits: true },
    stages
  }))

const lastValue = (entries: ReadonlyArray<{ readonly values: Readonly<Record<string, number>> }>, key: string) =>
  entries.map((e) => e.values[key]).filter((v) => v !== undefined).at(-1)

describe("rejection-sampling", () => {
  it("accept_rate is kept over every sample drawn, not over the samples looked at until maxPerPrompt was reached", async () => {
    const file = recipeFile("rejection", [{
      stage: "rejection-sampling",
      name: "rs",
      config: {
        prompts: 3, samples: 4, maxPerPrompt: 1, requireStop: false,
        sampling: { maxNewTokens: 3, temperature: 1 },
        // threshold 0: every completion passes, so exactly maxPerPrompt are kept per prompt
        rewards: [{ plugin: "@r1flow/reward-format", name: "format" }], thresholds: { format: 0 }
      }
    }])
    const result = await run(Run.run(file, { overrides: [], log: () => {} }))
    const { entries } = Metrics.readJsonl(result.dir.metrics)
    expect(lastValue(entries, "rs/kept")).toBe(3)
    expect(lastValue(entries, "rs/sampled")).toBe(12)
    expect(lastValue(entries, "rs/accept_rate")).toBeCloseTo(3 / 12, 10)
  }, 120_000)
})

describe("grpo", () => {
  const stage = (loss: Record<string, unknown>) => ({
    steps: 1, promptsPerStep: 2, groupSize: 2, logEvery: 1,
    sampling: { maxNewTokens: 5, temperature: 1 },
    rewards: [{ plugin: "@r1flow/reward-format", name: "format" }],
    update: { loss: { lossType: "dr_grpo", ...loss }, optimizer: { learningRate: 1e-3 } }
  })

  it("dr_grpo's L defaults to sampling.maxNewTokens; an explicit maxCompletionLength is kept", async () => {
    const decode = (loss: Record<string, unknown>) => run(Effect.map(Schema.decodeUnknownEffect(Grpo.Config)(stage(loss)), (c) => Grpo.updateConfig(c, { padId: 7 })))
    const implied = await decode({})
    expect(implied.loss.lossType).toBe("dr_grpo")
    expect(implied.loss.maxCompletionLength).toBe(5)
    expect(implied.padId).toBe(7)
    expect(implied.optimizer.totalSteps).toBe(1)
    expect((await decode({ maxCompletionLength: 9 })).loss.maxCompletionLength).toBe(9)
  })

  it("a dr_grpo stage without maxCompletionLength runs", async () => {
    const file = recipeFile("drgrpo", [{ stage: "grpo", name: "rl", config: stage({}) }])
    const result = await run(Run.run(file, { overrides: [], log: () => {} }))
    const { entries } = Metrics.readJsonl(result.dir.metrics)
    expect(lastValue(entries, "optimizer_steps")).toBe(1)
  }, 120_000)
})
