/**
 * The demo's recipe (`r1-zero`: pretrain → eval base → GRPO → eval final), shrunk to seconds, run twice with the
 * same seed: on webgpu (forced, so Mesa's lavapipe serves in CI, with every WGSL kernel in play) and on wasm (the
 * native kernels). Every stage completes on the backend it names, and they agree:
 * - every metric within 1e-5 relative (|a − b| / (1 + |b|)): the kernels sum in other orders, measured ≤ 1.4e-7;
 * - the sampled completions (both evals) are equal: a draw flips only when u lands within ~1e-7 of a boundary
 *   of the cumulative probabilities, which these few hundred draws do not do;
 * - the final checkpoint's weights within 1e-5 relative.
 * GRPO's update is exercised: a unigram repetition penalty and tag-count format credit vary across a random
 * policy's completions (accuracy alone is 0 for all of them), so the advantages, loss and gradient are nonzero.
 * Skips, printing why, when no webgpu adapter can be had (no libvulkan1 or no Vulkan ICD).
 */
import { Backend } from "@r1flow/backend"
import { mkdirSync, readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { r1flow, tempDir } from "./support/launch.js"

const cache = fileURLToPath(new URL("../../../node_modules/.cache/mesa-shaders", import.meta.url))
mkdirSync(cache, { recursive: true })
const skip = await Backend.init({ force: "webgpu" }).then(() => undefined, (e: unknown) => (e instanceof Error ? e.message : String(e)))
if (skip !== undefined) console.warn(`webgpu recipe test skipped: ${skip}`)

const rewards = [
  { plugin: "@r1flow/reward-math-accuracy", name: "accuracy", weight: 1 },
  { plugin: "@r1flow/reward-repetition", name: "repetition", weight: 1, config: { ngram: 1 } },
  { plugin: "@r1flow/reward-format", name: "format", weight: 1, config: { mode: "tag-count" } }
]
const sets = [
  "task.train=48", "task.test=4", "corpus.count=48", "tokenizer.size=512",
  "model.dModel=16", "model.nLayers=1", "model.nHeads=2", "model.nKvHeads=1", "model.dFf=32", "model.maxSeqLen=128",
  "stages.0.config.steps=4", "stages.0.config.batchSize=4", "stages.0.config.logEvery=1",
  "stages.1.config.samples=2", "stages.1.config.sampling.maxNewTokens=8",
  "stages.2.config.steps=2", "stages.2.config.promptsPerStep=2", "stages.2.config.groupSize=4", "stages.2.config.sampling.maxNewTokens=16",
  "stages.2.config.evalEvery=0", "stages.2.config.logEvery=1", `stages.2.config.rewards=${JSON.stringify(rewards)}`,
  "stages.3.config.samples=2", "stages.3.config.sampling.maxNewTokens=8"
]

/** Runs the shrunk recipe on `backend`; returns its run directory. */
const runOn = (backend: string, runs: string): string => {
  const r = r1flow(["run", "r1-zero", `--set`, `runsDir=${runs}`, ...sets.flatMap((s) => ["--set", s])], {
    env: { R1FLOW_BACKEND: backend, MESA_SHADER_CACHE_DIR: process.env.MESA_SHADER_CACHE_DIR ?? cache },
    timeout: 300_000
  })
  expect(r.status, r.stdout + r.stderr).toBe(0)
  expect(r.stdout).toContain(`backend: ${backend} (`)
  return join(runs, readdirSync(runs)[0])
}

const lines = (dir: string) => readFileSync(join(dir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as Record<string, number>)
const rel = (a: number, b: number) => Math.abs(a - b) / (1 + Math.abs(b))

/** The float32 tensors of a safetensors file, by name. */
const tensors = (file: string): Map<string, Float32Array> => {
  const buf = readFileSync(file)
  const n = Number(buf.readBigUInt64LE(0))
  const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8")) as Record<string, { dtype: string; data_offsets: [number, number] }>
  const out = new Map<string, Float32Array>()
  for (const [name, t] of Object.entries(header)) {
    if (name === "__metadata__") continue
    expect(t.dtype).toBe("F32")
    const bytes = buf.subarray(8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1])
    out.set(name, new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)))
  }
  return out
}
const finalWeights = (dir: string) => tensors(join(dir, "checkpoints", readFileSync(join(dir, "checkpoints", "latest"), "utf8").trim(), "policy", "model.safetensors"))

describe.skipIf(skip !== undefined)("the demo recipe on webgpu (lavapipe) against wasm, same seed", () => {
  it("completes every stage and agrees: metrics within 1e-5, the same samples, weights within 1e-5", () => {
    const base = tempDir("webgpu-recipe")
    const gpu = runOn("webgpu", join(base, "gpu")), wasm = runOn("wasm", join(base, "wasm"))
    const manifest = JSON.parse(readFileSync(join(gpu, "manifest.json"), "utf8"))
    expect(JSON.stringify(manifest.backend)).toContain("webgpu")
    // summary.json is written once the last stage is done; both evals are in it.
    for (const dir of [gpu, wasm]) expect(JSON.parse(readFileSync(join(dir, "summary.json"), "utf8")).evals.map((e: { name: string }) => e.name)).toEqual(["base", "final"])

    const g = lines(gpu), w = lines(wasm)
    expect(g.length).toBe(w.length)
    g.forEach((entry, i) => {
      expect(Object.keys(entry).sort()).toEqual(Object.keys(w[i]).sort())
      for (const [k, v] of Object.entries(entry)) expect(rel(v, w[i][k]), `line ${i + 1} ${k}: ${v} vs ${w[i][k]}`).toBeLessThan(1e-5)
    })
    const grpo = w.filter((e) => "kl" in e)
    expect(grpo).toHaveLength(2)
    expect(grpo.some((e) => e.reward_std > 0 && e.grad_norm > 0)).toBe(true)

    for (const e of ["base", "final"]) {
      const samples = (dir: string) => (JSON.parse(readFileSync(join(dir, "evals", `${e}.json`), "utf8")).samples as Array<{ completion: string }>).map((s) => s.completion)
      expect(samples(gpu), e).toEqual(samples(wasm))
    }

    const gw = finalWeights(gpu), ww = finalWeights(wasm)
    expect([...gw.keys()].sort()).toEqual([...ww.keys()].sort())
    let worst = 0
    for (const [name, a] of gw) a.forEach((x, i) => (worst = Math.max(worst, rel(x, ww.get(name)![i]))))
    expect(worst).toBeLessThan(1e-5)
  }, 400_000)
})
