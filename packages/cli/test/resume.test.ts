/**
 * Exactness of checkpoints and resume (run in child processes, as a user would run them):
 * two fresh runs of one config and seed are bitwise identical; a run killed with SIGKILL mid-GRPO
 * (while writing a checkpoint, through the `R1FLOW_TEST_KILL_AT_CHECKPOINT` hook, so the kill lands
 * at the same point every time) and resumed ends bitwise identical to an uninterrupted one; a corrupt
 * or mismatched checkpoint is refused without touching the run.
 */
import { spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, readdirSync, readFileSync, truncateSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "vitest"

const recipe = JSON.stringify({
  name: "tiny",
  seed: 3,
  backend: "wasm",
  task: { kind: "arithmetic", digits: [1, 2], ops: ["+"], train: 64, test: 4 },
  corpus: { count: 64 },
  tokenizer: { kind: "compact", base: "cl100k_base", size: 512 },
  model: { dModel: 16, nLayers: 1, nHeads: 2, nKvHeads: 1, dFf: 32, maxSeqLen: 128 },
  checkpoint: { every: 1, keep: 2 },
  stages: [
    { stage: "pretrain", config: { steps: 6, batchSize: 4, optimizer: { learningRate: 0.01 } } },
    {
      stage: "grpo",
      config: {
        steps: 5, promptsPerStep: 2, groupSize: 4, sampling: { maxNewTokens: 8, temperature: 1 },
        rewards: [{ plugin: "@r1flow/reward-format", config: { mode: "tag-count" } }],
        update: { loss: { beta: 0.05 }, optimizer: { learningRate: 0.01 }, refSyncSteps: 2 }
      }
    },
    { stage: "eval", name: "final", config: { samples: 2, sampling: { maxNewTokens: 8, temperature: 1 } } }
  ]
})

const script = (command: "run" | "resume", arg: string) => `
import { Effect } from "effect"
import { Run } from "@r1flow/engine"
const program = ${command === "run" ? `Run.run(${JSON.stringify(arg)}, { log: () => {} })` : `Run.resume(${JSON.stringify(arg)}, { log: () => {} })`}
Effect.runPromise(program).then((r) => console.log("DIR " + r.dir.root), (e) => { console.error("FAILED " + (e._tag ?? "") + ": " + e.message); process.exit(3) })
`

const node = (command: "run" | "resume", arg: string, env: Record<string, string> = {}) =>
  spawnSync(process.execPath, ["--input-type=module", "-e", script(command, arg)], { encoding: "utf8", timeout: 120_000, env: { ...process.env, ...env } })

const setup = () => {
  const base = mkdtempSync(join(tmpdir(), "r1flow-resume-"))
  const file = join(base, "tiny.json")
  writeFileSync(file, JSON.stringify({ ...JSON.parse(recipe), runsDir: join(base, "runs") }))
  return { base, file }
}

const finalState = (dir: string) => {
  const latest = readFileSync(join(dir, "checkpoints", "latest"), "utf8").trim()
  return {
    latest,
    weights: readFileSync(join(dir, "checkpoints", latest, "policy", "model.safetensors")),
    metrics: readFileSync(join(dir, "metrics.jsonl"), "utf8"),
    evals: JSON.parse(readFileSync(join(dir, "evals", "final.json"), "utf8")).samples
  }
}

const runDir = (out: string) => {
  const line = out.split("\n").find((l) => l.startsWith("DIR "))
  if (line === undefined) throw new Error(`no run directory in output: ${out}`)
  return line.slice(4)
}

describe("reproducibility and exact resume", () => {
  it("two fresh runs, and a run killed with SIGKILL and resumed, end bitwise identical", async () => {
    const { file } = setup()
    const a = node("run", file)
    expect(a.status, a.stderr).toBe(0)
    const b = node("run", file)
    expect(b.status, b.stderr).toBe(0)
    const A = finalState(runDir(a.stdout))
    const B = finalState(runDir(b.stdout))
    expect(B.metrics).toBe(A.metrics)
    expect(Buffer.compare(B.weights, A.weights)).toBe(0)
    expect(B.evals).toEqual(A.evals)

    // A third run is killed while writing its 9th checkpoint (global step 9, GRPO's third step of five:
    // 6 pretrain checkpoints, then one per GRPO step), after step 9's metrics and rollouts were written.
    const runs = JSON.parse(readFileSync(file, "utf8")).runsDir as string
    const before = new Set(readdirSync(runs))
    const killed = node("run", file, { R1FLOW_TEST_KILL_AT_CHECKPOINT: "9" })
    expect(killed.signal, `the run was not killed: status ${killed.status}, ${killed.stderr}`).toBe("SIGKILL")
    const fresh = readdirSync(runs).filter((d) => !before.has(d))
    expect(fresh.length).toBe(1)
    const dir = join(runs, fresh[0])
    // Killed mid-run: the last durable checkpoint is step 8, step 9's work is on disk but not in it, nothing after.
    expect(readFileSync(join(dir, "checkpoints", "latest"), "utf8").trim()).toBe("step-000008")
    expect(existsSync(join(dir, "checkpoints", "step-000009.tmp"))).toBe(true)
    expect(readFileSync(join(dir, "metrics.jsonl"), "utf8")).toContain('{"step":9,')
    expect(existsSync(join(dir, "summary.json"))).toBe(false)
    expect(existsSync(join(dir, "evals", "final.json"))).toBe(false)
    const c = node("resume", dir)
    expect(c.status, c.stderr).toBe(0)
    const C = finalState(dir)
    expect(C.metrics).toBe(A.metrics)
    expect(Buffer.compare(C.weights, A.weights)).toBe(0)
    expect(C.evals).toEqual(A.evals)
  }, 300_000)

  it("a corrupt or mismatched checkpoint is refused, and the run is left as it was", () => {
    const { file } = setup()
    const a = node("run", file)
    expect(a.status, a.stderr).toBe(0)
    const dir = runDir(a.stdout)
    const metricsBefore = readFileSync(join(dir, "metrics.jsonl"), "utf8")
    const latest = readFileSync(join(dir, "checkpoints", "latest"), "utf8").trim()
    const weights = join(dir, "checkpoints", latest, "policy", "model.safetensors")
    const original = readFileSync(weights)
    truncateSync(weights, 100)
    const corrupt = node("resume", dir)
    expect(corrupt.status).toBe(3)
    expect(corrupt.stderr).toContain("checksum mismatch: the file is truncated or corrupt")
    expect(corrupt.stderr).toContain("model.safetensors")
    expect(readFileSync(join(dir, "metrics.jsonl"), "utf8")).toBe(metricsBefore)
    writeFileSync(weights, original)

    const manifestPath = join(dir, "manifest.json")
    const manifest = JSON.parse(readFileSync(manifestPath, "utf8"))
    writeFileSync(manifestPath, JSON.stringify({ ...manifest, recipe: { ...manifest.recipe, seed: 4 } }))
    const mismatched = node("resume", dir)
    expect(mismatched.status).toBe(3)
    expect(mismatched.stderr).toContain("made under a different config")
    expect(readFileSync(join(dir, "metrics.jsonl"), "utf8")).toBe(metricsBefore)
  }, 300_000)
})
