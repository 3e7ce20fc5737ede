/**
 * Exactness of checkpoints and resume (run in child processes, as a user would run them):
 * two fresh runs of one config and seed are bitwise identical; a run killed with SIGKILL mid-GRPO
 * (while writing a checkpoint, through the `R1FLOW_TEST_KILL_AT_CHECKPOINT` hook, so the kill lands
 * at the same point every time) and resumed ends bitwise identical to an uninterrupted one; a corrupt
 * or mismatched checkpoint is refused without touching the run.
 */
import { existsSync, readFileSync, truncateSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { arithmetic, engine, expectSameEnd, finalEval, finalState, killedRun, runDir, tempRun, tinyRecipe } from "./support/launch.js"

const setup = () => tempRun("resume", tinyRecipe({
  seed: 3,
  task: arithmetic(64, 4),
  corpus: { count: 64 },
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
    finalEval(2, 1, 8)
  ]
}))

const node = (command: "run" | "resume", arg: string) => engine({ command, arg })

describe("reproducibility and exact resume", () => {
  it("two fresh runs, and a run killed with SIGKILL and resumed, end bitwise identical", async () => {
    const { file, runs } = setup()
    const a = node("run", file)
    expect(a.status, a.stderr).toBe(0)
    const b = node("run", file)
    expect(b.status, b.stderr).toBe(0)
    const A = finalState(runDir(a))
    const B = finalState(runDir(b))
    expectSameEnd(B, A)

    // A third run is killed while writing its 9th checkpoint (global step 9, GRPO's third step of five:
    // 6 pretrain checkpoints, then one per GRPO step), after step 9's metrics and rollouts were written.
    const dir = killedRun(file, runs, "9")
    // Killed mid-run: the last durable checkpoint is step 8, step 9's work is on disk but not in it, nothing after.
    expect(readFileSync(join(dir, "checkpoints", "latest"), "utf8").trim()).toBe("step-000008")
    expect(existsSync(join(dir, "checkpoints", "step-000009.tmp"))).toBe(true)
    expect(readFileSync(join(dir, "metrics.jsonl"), "utf8")).toContain('{"step":9,')
    expect(existsSync(join(dir, "summary.json"))).toBe(false)
    expect(existsSync(join(dir, "evals", "final.json"))).toBe(false)
    const c = node("resume", dir)
    expect(c.status, c.stderr).toBe(0)
    expectSameEnd(finalState(dir), A)
  }, 300_000)

  it("a corrupt or mismatched checkpoint is refused, and the run is left as it was", () => {
    const { file } = setup()
    const a = node("run", file)
    expect(a.status, a.stderr).toBe(0)
    const dir = runDir(a)
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
