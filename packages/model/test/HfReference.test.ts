import * as tf from "@tensorflow/tfjs"
import { Backend } from "@r1flow/backend"
import { Effect } from "effect"
import { execFileSync, spawnSync } from "node:child_process"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { beforeAll, describe, expect, it } from "vitest"
import { Checkpoint, Safetensors, Transformer } from "../src/index.js"
import { ids2d, maxAbsDiff } from "./helpers.js"
import { writeCheckpoint, type Family } from "./support/hf.js"

/**
 * r1flow's logits against a plain-torch forward of each family (test/reference/hf_forward.py, written
 * from the transformers modeling code without transformers), on the tiny HF-layout checkpoints.
 */
const script = path.join(path.dirname(fileURLToPath(import.meta.url)), "reference", "hf_forward.py")

/** The first python that imports torch and numpy: $R1FLOW_PYTHON, python3 on PATH, Debian's own. */
const python = [process.env.R1FLOW_PYTHON, "python3", "/usr/bin/python3"].find((p) =>
  p !== undefined && p !== "" && spawnSync(p, ["-c", "import torch, numpy"], { stdio: "ignore", timeout: 60_000 }).status === 0
)
const skipped = python === undefined
if (skipped) console.warn("HfReference: skipped, no python3 that imports torch and numpy (apt-get install python3-torch, or set R1FLOW_PYTHON)")

const IDS = [[1, 5, 9, 3, 36, 0, 7, 2, 11, 30, 14, 6], [4, 4, 8, 15, 16, 23, 1, 0, 2, 35, 12, 20]]
const V = 37

const reference = (dir: string): Float64Array => {
  const out = JSON.parse(execFileSync(python!, [script, dir, JSON.stringify(IDS)], { encoding: "utf8", maxBuffer: 64 << 20, timeout: 120_000 }))
  expect(out.shape).toEqual([IDS.length, IDS[0].length, V])
  return Float64Array.from(out.logits as Array<number>)
}

const ours = async (dir: string): Promise<Float32Array> => {
  const m = await Effect.runPromise(Checkpoint.load(dir))
  const l = tf.tidy(() => Transformer.forward(m, ids2d(IDS)).dataSync() as Float32Array)
  m.dispose()
  return l
}

const editConfig = async (dir: string, edit: (c: Record<string, unknown>) => void) => {
  const file = path.join(dir, "config.json")
  const c = JSON.parse(await fs.readFile(file, "utf8"))
  edit(c)
  await fs.writeFile(file, JSON.stringify(c))
}

beforeAll(async () => {
  await Backend.init()
})

const cases: ReadonlyArray<[Family, Safetensors.FloatDType, number]> = [
  ["llama", "F32", 1],
  ["llama3", "BF16", 2],
  ["llama-linear", "F32", 1],
  ["smollm2", "F16", 1],
  ["mistral", "BF16", 1],
  ["qwen2", "F32", 2],
  ["qwen2-untied", "BF16", 1],
  ["qwen3", "BF16", 3],
  ["qwen3", "F16", 1]
]

describe.skipIf(skipped)(`PyTorch reference forward${skipped ? " (skipped: no python3 with torch)" : ""}`, () => {
  for (const [family, dtype, shards] of cases) {
    it(`${family} ${dtype}${shards > 1 ? `, ${shards} shards` : ""}: logits within 1e-4 of plain torch`, async () => {
      const { dir } = await writeCheckpoint(family, { dtype, shards, seed: 7 })
      const [a, b] = [await ours(dir), reference(dir)]
      expect(a.length).toBe(b.length)
      const scale = maxAbsDiff(b, new Float64Array(b.length))
      expect(scale).toBeGreaterThan(1) // logits far from zero, so 1e-4 is a real bound
      expect(maxAbsDiff(a, b)).toBeLessThan(1e-4)
    }, 60_000)
  }

  it("the comparison sees what the family adds: Llama 3 scaling, Qwen3's q/k norms, Qwen2's biases", async () => {
    // Each reference run on a config that drops the feature: r1flow's logits must then be far from it.
    const drop: ReadonlyArray<[Family, (c: Record<string, unknown>) => void, (d: string) => Promise<void>]> = [
      ["llama3", (c) => void (c.rope_scaling = null), async () => {}],
      ["qwen3", (c) => void (c.model_type = "llama"), async (d) => {
        const file = path.join(d, "model.safetensors")
        const { tensors } = await Effect.runPromise(Safetensors.read(file))
        await Effect.runPromise(Safetensors.write(file, Object.fromEntries(Object.entries(tensors).filter(([n]) => !/_norm\.weight$/.test(n) || !n.includes("self_attn")))))
      }],
      ["qwen2", (c) => void (c.model_type = "llama"), async (d) => {
        const file = path.join(d, "model.safetensors")
        const { tensors } = await Effect.runPromise(Safetensors.read(file))
        await Effect.runPromise(Safetensors.write(file, Object.fromEntries(Object.entries(tensors).filter(([n]) => !n.endsWith(".bias")))))
      }]
    ]
    for (const [family, edit, strip] of drop) {
      const { dir } = await writeCheckpoint(family, { seed: 3 })
      const mine = await ours(dir)
      expect(maxAbsDiff(mine, reference(dir))).toBeLessThan(1e-4)
      await editConfig(dir, edit)
      await strip(dir)
      expect(maxAbsDiff(mine, reference(dir)), family).toBeGreaterThan(1e-2)
    }
  }, 60_000)
})
