/**
 * Test-sized recipes and the plugin modules tests write beside them: a recipe builder with overrides,
 * the tiny pretrain-then-eval run most run-directory tests start from, and user plugins in plain JavaScript.
 */
import { mkdirSync, writeFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { tempDir } from "../helpers.js"

/** The `effect` a user plugin imports, as a URL a module written to a temp folder can resolve. */
export const effectUrl = import.meta.resolve("effect")

/** The arithmetic task at test size: one- and two-digit problems. */
export const arithmetic = (train: number, test: number, ops: ReadonlyArray<string> = ["+"]) => ({ kind: "arithmetic", digits: [1, 2], ops, train, test })

/** The compact tokenizer at test size. */
export const tokenizer = { kind: "compact", base: "cl100k_base", size: 512 }

/** A fresh 1-layer policy. */
export const model = { dModel: 16, nLayers: 1, nHeads: 2, nKvHeads: 1, dFf: 32, maxSeqLen: 128 }

/**
 * A test-sized recipe (fresh 1-layer policy, 16 arithmetic problems, no stages) with top-level keys replaced
 * by `patch`; a key patched to `undefined` is left out.
 */
export const testRecipe = (patch: Record<string, unknown> = {}): Record<string, unknown> => ({
  name: "tiny",
  seed: 1,
  task: arithmetic(16, 2),
  corpus: { count: 16 },
  tokenizer,
  model,
  stages: [],
  ...patch
})

/** Writes `recipe` to `root/<name>` with its runs in `root/runs`; returns the file. */
export const writeRecipe = (root: string, recipe: Record<string, unknown>, name = "recipe.json") => {
  const file = join(root, name)
  writeFileSync(file, JSON.stringify({ ...recipe, runsDir: join(root, "runs") }, null, 2))
  return file
}

/**
 * A recipe that runs in a few seconds on wasm, in a fresh temp folder with its own `runs/`: 3 pretrain steps
 * (a checkpoint after each), then an eval. `patch` changes top-level keys.
 */
export const tinyRecipe = (prefix: string, patch: Record<string, unknown> = {}) => {
  const base = tempDir(prefix)
  const file = writeRecipe(base, testRecipe({
    seed: 3,
    backend: "wasm",
    checkpoint: { every: 1, keep: 10 },
    stages: [
      { stage: "pretrain", config: { steps: 3, batchSize: 2 } },
      { stage: "eval", name: "final", config: { samples: 1, sampling: { maxNewTokens: 4, temperature: 0 } } }
    ],
    ...patch
  }), "tiny.json")
  return { base, file, runs: join(base, "runs") }
}

/** Writes `body` (a module) to `root/rel`, folders made. */
export const writeModule = (root: string, rel: string, body: string) => {
  mkdirSync(dirname(join(root, rel)), { recursive: true })
  writeFileSync(join(root, rel), body)
}

/** A reward plugin scoring each completion by its length in characters. */
export const charsReward = `import { Schema } from ${JSON.stringify(effectUrl)}
export default { kind: "reward", name: "chars", version: "1.0.0", description: "completion length", config: Schema.Struct({}),
  make: () => ({ score: (input) => Float32Array.from(input.completions, (c) => c.length) }) }`

/** A stage plugin that records that it ran: it sets `globalThis[flag]` to the label it ran under. */
export const markStage = (flag: string) => `import { Effect, Schema } from ${JSON.stringify(effectUrl)}
export default { kind: "stage", name: "mark", version: "1.0.0", description: "records that it ran", config: Schema.Struct({}),
  make: () => ({ kind: "mark", run: (label) => Effect.sync(() => { globalThis[${JSON.stringify(flag)}] = label }) }) }`
