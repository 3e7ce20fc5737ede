/**
 * A run started from a directory outside the project (no node_modules there): the built-in reward
 * plugins still load, in the process and in their worker threads, from where r1flow is installed.
 */
import { spawnSync } from "node:child_process"
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { pathToFileURL } from "node:url"
import { describe, expect, it } from "vitest"

// The built engine (the test runner's source condition would resolve its TypeScript), and `effect` beside it,
// as a user's installed copies would be.
const engineDist = join(dirname(createRequire(import.meta.url).resolve("@r1flow/engine/package.json")), "dist", "index.js")
const engine = pathToFileURL(engineDist).href
const effect = pathToFileURL(createRequire(engineDist).resolve("effect")).href

describe("working directory", () => {
  it("a recipe naming reward plugins by package runs from a directory that cannot resolve them", () => {
    const base = mkdtempSync(join(tmpdir(), "r1flow-cwd-"))
    const file = join(base, "tiny.json")
    writeFileSync(file, JSON.stringify({
      name: "tiny-cwd",
      seed: 1,
      backend: "wasm",
      runsDir: join(base, "runs"),
      task: { kind: "arithmetic", digits: [1, 2], ops: ["+"], train: 16, test: 2 },
      corpus: { count: 16 },
      tokenizer: { kind: "compact", base: "cl100k_base", size: 512 },
      model: { dModel: 16, nLayers: 1, nHeads: 2, nKvHeads: 1, dFf: 32, maxSeqLen: 128 },
      stages: [
        { stage: "pretrain", config: { steps: 2, batchSize: 2 } },
        {
          stage: "grpo",
          config: {
            steps: 1, promptsPerStep: 1, groupSize: 2, sampling: { maxNewTokens: 4, temperature: 1 },
            rewards: [{ plugin: "@r1flow/reward-format", config: { mode: "tag-count" } }, { plugin: "@r1flow/reward-math-accuracy" }]
          }
        }
      ]
    }))
    const script = `
const { Effect } = await import(${JSON.stringify(effect)})
const { Run } = await import(${JSON.stringify(engine)})
Effect.runPromise(Run.run(${JSON.stringify(file)}, { log: () => {} })).then(() => console.log("OK"), (e) => { console.error("FAILED " + (e._tag ?? "") + ": " + e.message); process.exit(3) })
`
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { cwd: base, encoding: "utf8", timeout: 120_000 })
    expect(r.stderr + r.stdout, r.stderr).toContain("OK")
    expect(r.status).toBe(0)
  }, 150_000)

  it("reward and stage plugins given as relative paths resolve from the recipe's directory, whatever the working directory", () => {
    const base = mkdtempSync(join(tmpdir(), "r1flow-cwd-"))
    const elsewhere = mkdtempSync(join(tmpdir(), "r1flow-elsewhere-"))
    mkdirSync(join(base, "plugins"))
    writeFileSync(join(base, "plugins", "chars.mjs"), `import { Schema } from ${JSON.stringify(effect)}
export default { kind: "reward", name: "chars", version: "1.0.0", description: "completion length", config: Schema.Struct({}),
  make: () => ({ score: (input) => Float32Array.from(input.completions, (c) => c.length) }) }`)
    writeFileSync(join(base, "plugins", "noop.mjs"), `import { Effect, Schema } from ${JSON.stringify(effect)}
export default { kind: "stage", name: "noop", version: "1.0.0", description: "does nothing", config: Schema.Struct({}),
  make: () => ({ kind: "noop", run: () => Effect.void }) }`)
    const file = join(base, "recipe.json")
    writeFileSync(file, JSON.stringify({
      name: "tiny-paths",
      seed: 1,
      backend: "wasm",
      runsDir: join(base, "runs"),
      task: { kind: "arithmetic", digits: [1, 2], ops: ["+"], train: 8, test: 2 },
      corpus: { count: 8 },
      tokenizer: { kind: "compact", base: "cl100k_base", size: 512 },
      model: { dModel: 16, nLayers: 1, nHeads: 2, nKvHeads: 1, dFf: 32, maxSeqLen: 128 },
      stages: [
        { stage: "./plugins/noop.mjs" },
        { stage: "grpo", config: { steps: 1, promptsPerStep: 1, groupSize: 2, sampling: { maxNewTokens: 4, temperature: 1 }, rewards: [{ plugin: "./plugins/chars.mjs" }] } }
      ]
    }))
    const script = `
const { Effect } = await import(${JSON.stringify(effect)})
const { Run } = await import(${JSON.stringify(engine)})
Effect.runPromise(Run.run(${JSON.stringify(file)}, { log: () => {} })).then((r) => console.log("OK " + r.dir.root), (e) => { console.error("FAILED " + (e._tag ?? "") + ": " + e.message); process.exit(3) })
`
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { cwd: elsewhere, encoding: "utf8", timeout: 120_000 })
    expect(r.stderr + r.stdout, r.stderr).toContain("OK")
    expect(r.status).toBe(0)
  }, 150_000)
})
