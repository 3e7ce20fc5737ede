/**
 * The memory accounting and the backend's size-based choice through a real run: the backend is not set up
 * before the run (no `Backend.init` here), so the run's own choice, by its estimate, is what the manifest shows.
 */
import { Metrics } from "@r1flow/core"
import { Schema } from "effect"
import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import * as Recipe from "../src/Recipe.js"
import * as Run from "../src/Run.js"
import { run, tempDir } from "./helpers.js"
import { writeQwen3 } from "./support/hf.js"
import { testRecipe, tinyRecipe, writeRecipe } from "./support/recipes.js"

const grpo = {
  steps: 2, promptsPerStep: 2, groupSize: 2, logEvery: 1,
  sampling: { maxNewTokens: 5, temperature: 1 },
  rewards: [{ plugin: "@r1flow/reward-format", name: "format" }],
  update: { loss: { beta: 0.04 }, activationCheckpointing: true, optimizer: { learningRate: 1e-3 } }
}

describe("memory accounting per stage", () => {
  it("the manifest records the size the backend was chosen by and each stage's peaks; every perf.jsonl line carries its stage's peaks so far", async () => {
    const file = writeRecipe(tempDir("memory-run"), testRecipe({
      name: "memory",
      stages: [{ stage: "pretrain", config: { steps: 2, batchSize: 4, logEvery: 1 } }, { stage: "grpo", name: "rl", config: grpo }]
    }))
    const lines: Array<string> = []
    const result = await run(Run.run(file, { log: (l) => lines.push(l) }))
    const manifest = JSON.parse(readFileSync(result.dir.manifest, "utf8")) as {
      parameters: number
      backend: { name: string; reason: string; bytesNeeded?: number }
      tokenizer: { vocabSize: number }
      memory: Array<Run.StageMemory>
    }
    // β > 0: policy + reference + gradient + two moments, 4 bytes each, counted from the run's own parameter count.
    expect(manifest.backend.bytesNeeded).toBe(20 * manifest.parameters)
    // What a rollout worker chooses its backend by, from the recipe alone: the same.
    expect(await run(Run.sizeOf(result.recipe, undefined, manifest.tokenizer.vocabSize))).toBe(manifest.backend.bytesNeeded)
    if (manifest.backend.name === "wasm") expect(manifest.backend.reason).toMatch(/^wasm: the run needs ~0\.\d\d GiB, within the 3\.0 GiB wasm takes/)

    expect(manifest.memory.map((m) => [m.stage, m.label])).toEqual([[0, "pretrain"], [1, "rl"]])
    for (const m of manifest.memory) {
      // At least the policy's weights were live all along; RSS holds at least as much (the weights are in it).
      expect(m.peakTensorBytes).toBeGreaterThanOrEqual(4 * manifest.parameters)
      expect(m.peakRssBytes).toBeGreaterThan(m.peakTensorBytes / 8)
      expect(m.tensorPeakOf).toBe("allocations")
      expect(m.seconds).toBeGreaterThan(0)
      expect(m.resumedAtStep).toBeUndefined()
    }
    expect(lines.filter((l) => /^── \S+ done in [\d.]+ s; peak RSS [\d.]+ (MiB|GiB)(?: \(since the process began\))?, peak tensors [\d.]+ MiB$/.test(l))).toHaveLength(2)

    const perf = Metrics.readJsonl(join(result.dir.root, "perf.jsonl")).entries
    expect(perf.length).toBe(4) // two pretrain steps, two GRPO steps
    perf.forEach((e, i) => {
      const m = manifest.memory[i < 2 ? 0 : 1]
      expect(e.values["perf/peak_tensor_bytes"]).toBeGreaterThanOrEqual(4 * manifest.parameters)
      // The stage's final peak is at least what its lines saw.
      expect(e.values["perf/peak_tensor_bytes"]).toBeLessThanOrEqual(m.peakTensorBytes)
      expect(e.values["perf/peak_rss_bytes"]).toBeLessThanOrEqual(m.peakRssBytes)
    })
    for (const [a, b] of [[0, 1], [2, 3]]) {
      expect(perf[b].values["perf/peak_tensor_bytes"]).toBeGreaterThanOrEqual(perf[a].values["perf/peak_tensor_bytes"])
      expect(perf[b].values["perf/peak_rss_bytes"]).toBeGreaterThanOrEqual(perf[a].values["perf/peak_rss_bytes"])
    }
    // metrics.jsonl stays free of them (it must be the same between two runs of one config).
    const metrics = readFileSync(result.dir.metrics, "utf8")
    expect(metrics).not.toContain("peak_")
  }, 180_000)

  it("sizeOf reads a model directory's config.json: under LoRA the base once and the adapters trained", async () => {
    const dir = tempDir("memory-hf")
    await writeQwen3(dir, { vocabSize: 1000, tokenizer: false })
    const recipe = Schema.decodeUnknownSync(Recipe.Recipe)(testRecipe({
      model: { from: dir, lora: { rank: 2, alpha: 4, targets: ["q"] } },
      stages: [{ stage: "grpo", config: { update: { loss: { beta: 0.04 } } } }]
    }))
    // Qwen3 at C 32, 4 heads of 8 (2 for k/v), F 64, one block, V 1000, tied: V·C + (2C norms + q 32·32 + k, v 32·16 each
    // + o 32·32 + q/k norms 2·8 + 3·32·64) + the final norm C.
    const P = 1000 * 32 + (64 + 1024 + 2 * 512 + 1024 + 16 + 6144) + 32
    const adapters = 2 * (32 + 32) // r·(in + out) of q
    expect(await run(Run.sizeOf(recipe, dir, 0))).toBe(4 * P + 12 * adapters)
  }, 60_000)

  it("a resumed stage's entry replaces the stopped run's and says where it resumed; the rest of the manifest is kept", async () => {
    const { file } = tinyRecipe("memory-resume")
    const { dir } = await run(Run.run(file, { log: () => {} }))
    const read = () => JSON.parse(readFileSync(dir.manifest, "utf8")) as Record<string, unknown> & { memory: Array<Run.StageMemory> }
    const before = read()
    expect(before.memory.map((m) => [m.stage, m.resumedAtStep])).toEqual([[0, undefined], [1, undefined]])
    // As a run stopped after pretrain's step 2 of 3 would have left it.
    writeFileSync(join(dir.checkpoints, "latest"), "step-000002\n")
    await run(Run.resume(dir.root, { log: () => {} }))
    const after = read()
    expect(after.memory.map((m) => [m.stage, m.label, m.resumedAtStep])).toEqual([[0, "pretrain", 2], [1, "final", undefined]])
    const { memory: _a, ...restAfter } = after
    const { memory: _b, ...restBefore } = before
    expect(restAfter).toEqual(restBefore)
  }, 180_000)
})
