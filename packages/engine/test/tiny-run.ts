import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { tempDir } from "./helpers.js"

/**
 * A recipe that runs in a few seconds, in a fresh temp folder with its own `runs/`: 3 pretrain steps
 * (a checkpoint after each), then an eval. `patch` changes top-level keys.
 */
export const tinyRecipe = (prefix: string, patch: Record<string, unknown> = {}) => {
  const base = tempDir(prefix)
  const file = join(base, "tiny.json")
  const runs = join(base, "runs")
  writeFileSync(file, JSON.stringify({
    name: "tiny",
    seed: 3,
    backend: "wasm",
    runsDir: runs,
    task: { kind: "arithmetic", digits: [1, 2], ops: ["+"], train: 16, test: 2 },
    corpus: { count: 16 },
    tokenizer: { kind: "compact", base: "cl100k_base", size: 512 },
    model: { dModel: 16, nLayers: 1, nHeads: 2, nKvHeads: 1, dFf: 32, maxSeqLen: 128 },
    checkpoint: { every: 1, keep: 10 },
    stages: [
      { stage: "pretrain", config: { steps: 3, batchSize: 2 } },
      { stage: "eval", name: "final", config: { samples: 1, sampling: { maxNewTokens: 4, temperature: 0 } } }
    ],
    ...patch
  }, null, 2))
  return { base, file, runs }
}
