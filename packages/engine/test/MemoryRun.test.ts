/**
 * The memory accounting and the backend's size-based choice through a real run: the backend is not set up
 * before the run (no `Backend.init` here), so the run's own choice, by its estimate, is what the manifest shows.
 */
import { Metrics } from "@r1flow/core"
import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import * as Run from "../src/Run.js"
import { run, tempDir } from "./helpers.js"
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
      memory: Array<Run.StageMemory>
    }
    // β > 0: policy + reference + gradient + two moments, 4 bytes each, counted from the run's own parameter count.
    expect(manifest.backend.bytesNeeded).toBe(20 * manifest.parameters)
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
