/**
 * A run too big for wasm's heap goes to cpu on its own: the estimate is made from the recipe's model before
 * the policy's first tensor, and is what `Backend.init` was given. The backend is not set up before the run
 * (no `Backend.init` first), so the run's choice is the process's. The policy (168M parameters, ~12 s to
 * initialise here) is made and then refused by the data check (`maxSeqLen` 8 fits no prompt), so no stage runs.
 */
import { Backend } from "@r1flow/backend"
import { describe, expect, it } from "vitest"
import * as Run from "../src/Run.js"
import { runFail, tempDir } from "./helpers.js"
import { testRecipe, writeRecipe } from "./support/recipes.js"

const C = 1024, L = 10, F = 4096
const grpo = {
  steps: 1, promptsPerStep: 2, groupSize: 2,
  sampling: { maxNewTokens: 5, temperature: 1 },
  rewards: [{ plugin: "@r1flow/reward-format", name: "format" }],
  update: { loss: { beta: 0.04 } }
}

describe("the backend's choice by the run's size", () => {
  it("full GRPO with a reference on a 168M-parameter policy (~3.1 GiB) skips wasm for cpu, and says why", async () => {
    const file = writeRecipe(tempDir("backend-choice"), testRecipe({
      name: "big",
      model: { dModel: C, nLayers: L, nHeads: 8, nKvHeads: 8, dFf: F, maxSeqLen: 8 },
      stages: [{ stage: "grpo", config: grpo }]
    }))
    const refused = (await runFail(Run.run(file, { log: () => {} }))) as { message: string }
    expect(refused.message).toMatch(/maxSeqLen|context|longer/)
    const info = await Backend.init()
    expect(info.name).toBe("cpu")
    // 20 bytes a parameter: P = V·C (tied embedding) + L·(2C + 4C² + 3CF) + C, V the compact tokenizer's
    // vocabulary (at most its size 512 plus the specials; fewer when the corpus has fewer pieces).
    const perLayers = L * (2 * C + 4 * C * C + 3 * C * F) + C
    const P = info.bytesNeeded! / 20
    const V = (P - perLayers) / C
    expect(Number.isInteger(V) && V > 0 && V < 600, `V = ${V}`).toBe(true)
    expect(info.bytesNeeded!).toBeGreaterThan(Backend.WASM_BUDGET)
    expect(info.tried.find((t) => t.name === "wasm")?.reason).toMatch(/^not tried: the run needs ~3\.\d GiB, above the 3\.0 GiB wasm takes/)
    expect(info.reason).toMatch(/^cpu: the run needs ~3\.\d GiB, above/)
  }, 180_000)
})
