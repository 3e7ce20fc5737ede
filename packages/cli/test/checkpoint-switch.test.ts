/**
 * A kill at any point of a checkpoint write leaves a run that resumes, exactly. The kills land where the
 * `R1FLOW_TEST_KILL_AT_CHECKPOINT=<n>:<point>` hook puts them, every time: `switch` is the moment the
 * re-save of a step (after a stage with no steps of its own, here the eval) has moved the step's old
 * checkpoint out of the way and not yet made the new one count; `latest` is mid-way through replacing
 * the `latest` pointer (its temp file written, not yet renamed). Resume falls back to the newest valid
 * checkpoint when `latest` is missing or names nothing, and says so; `perf.jsonl` is cut back like
 * `metrics.jsonl`. Run in child processes on the built engine, as a user runs it.
 */
import { spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "vitest"

// 3 pretrain steps, a checkpoint after each (writes 1-3, the third at the stage's end), then an eval at
// step 3 and the re-save of step 3 after it (write 4).
const recipe = (runsDir: string) => ({
  name: "tiny-switch",
  seed: 5,
  backend: "wasm",
  runsDir,
  task: { kind: "arithmetic", digits: [1, 2], ops: ["+"], train: 16, test: 2 },
  corpus: { count: 16 },
  tokenizer: { kind: "compact", base: "cl100k_base", size: 512 },
  model: { dModel: 16, nLayers: 1, nHeads: 2, nKvHeads: 1, dFf: 32, maxSeqLen: 128 },
  checkpoint: { every: 1, keep: 2 },
  stages: [
    { stage: "pretrain", config: { steps: 3, batchSize: 2 } },
    { stage: "eval", name: "final", config: { samples: 2, sampling: { maxNewTokens: 4, temperature: 1 } } }
  ]
})

const script = (command: "run" | "resume", arg: string) => `
import { Effect } from "effect"
import { Run } from "@r1flow/engine"
Effect.runPromise(Run.${command}(${JSON.stringify(arg)}, { log: (l) => console.log("LOG " + l) }))
  .then((r) => console.log("DIR " + r.dir.root), (e) => { console.error("FAILED " + (e._tag ?? "") + ": " + e.message); process.exit(3) })
`

const node = (command: "run" | "resume", arg: string, env: Record<string, string> = {}) =>
  spawnSync(process.execPath, ["--input-type=module", "-e", script(command, arg)], { encoding: "utf8", timeout: 120_000, env: { ...process.env, ...env } })

const setup = () => {
  const base = mkdtempSync(join(tmpdir(), "r1flow-switch-"))
  const runs = join(base, "runs")
  const file = join(base, "tiny.json")
  writeFileSync(file, JSON.stringify(recipe(runs)))
  return { file, runs }
}

/** Runs `file` killed at `at`; returns the run directory it left. */
const killed = (file: string, runs: string, at: string) => {
  const before = new Set(existsSync(runs) ? readdirSync(runs) : [])
  const r = node("run", file, { R1FLOW_TEST_KILL_AT_CHECKPOINT: at })
  expect(r.signal, `not killed at ${at}: status ${r.status}, ${r.stderr}`).toBe("SIGKILL")
  const fresh = readdirSync(runs).filter((d) => !before.has(d))
  expect(fresh).toHaveLength(1)
  return join(runs, fresh[0])
}

const steps = (path: string) => readFileSync(path, "utf8").trim().split("\n").map((l) => (JSON.parse(l) as { step: number }).step)

const finalState = (dir: string) => {
  const latest = readFileSync(join(dir, "checkpoints", "latest"), "utf8").trim()
  return {
    weights: readFileSync(join(dir, "checkpoints", latest, "policy", "model.safetensors")),
    metrics: readFileSync(join(dir, "metrics.jsonl"), "utf8"),
    perfSteps: steps(join(dir, "perf.jsonl")),
    evals: JSON.parse(readFileSync(join(dir, "evals", "final.json"), "utf8")).samples
  }
}

const resumedLike = (dir: string, reference: ReturnType<typeof finalState>) => {
  const r = node("resume", dir)
  expect(r.status, r.stderr).toBe(0)
  const got = finalState(dir)
  expect(got.metrics).toBe(reference.metrics)
  expect(Buffer.compare(got.weights, reference.weights)).toBe(0)
  expect(got.evals).toEqual(reference.evals)
  expect(got.perfSteps).toEqual(reference.perfSteps)
  return r.stdout
}

describe("a kill anywhere in a checkpoint write", () => {
  it("killed while the re-save of a step switches folders, or mid-way through replacing latest: latest still names a checkpoint, and resume ends bitwise identical", () => {
    const { file, runs } = setup()
    const a = node("run", file)
    expect(a.status, a.stderr).toBe(0)
    const reference = finalState(/DIR (.+)/.exec(a.stdout)![1])
    expect(reference.perfSteps).toEqual([1, 2, 3])

    const atSwitch = killed(file, runs, "4:switch")
    const named = readFileSync(join(atSwitch, "checkpoints", "latest"), "utf8").trim()
    expect(existsSync(join(atSwitch, "checkpoints", named, "checksums.json")), `latest names ${named}, which is not there`).toBe(true)
    resumedLike(atSwitch, reference)

    const atLatest = killed(file, runs, "4:latest")
    expect(readdirSync(join(atLatest, "checkpoints")).some((f) => f.startsWith("latest.tmp-"))).toBe(true)
    resumedLike(atLatest, reference)
    expect(readdirSync(join(atLatest, "checkpoints")).filter((f) => f.startsWith("latest.tmp-"))).toEqual([])
  }, 300_000)

  it("resume cuts perf.jsonl back to the checkpoint, and falls back to the newest valid checkpoint when latest is missing or names nothing", () => {
    const { file, runs } = setup()
    const a = node("run", file)
    expect(a.status, a.stderr).toBe(0)
    const reference = finalState(/DIR (.+)/.exec(a.stdout)![1])

    // Killed writing checkpoint 3 (step 3): latest is step 2, step 3's perf line is on disk.
    const dir = killed(file, runs, "3")
    expect(readFileSync(join(dir, "checkpoints", "latest"), "utf8").trim()).toBe("step-000002")
    expect(steps(join(dir, "perf.jsonl"))).toEqual([1, 2, 3])
    writeFileSync(join(dir, "checkpoints", "latest"), "step-000009\n")
    const out = resumedLike(dir, reference)
    expect(out).toMatch(/LOG .*checkpoints\/latest names step-000009, which is not there.*using the newest valid checkpoint, step-000002/)

    const again = killed(file, runs, "3")
    rmSync(join(again, "checkpoints", "latest"))
    const out2 = resumedLike(again, reference)
    expect(out2).toMatch(/LOG .*checkpoints\/latest is missing.*step-000001, step-000002.*using the newest valid checkpoint, step-000002/)
  }, 300_000)
})
