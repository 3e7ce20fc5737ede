/**
 * A kill at any point of a checkpoint write leaves a run that resumes, exactly. The kills land where the
 * `R1FLOW_TEST_KILL_AT_CHECKPOINT=<n>:<point>` hook puts them, every time: `switch` is the moment the
 * re-save of a step (after a stage with no steps of its own, here the eval) has moved the step's old
 * checkpoint out of the way and not yet made the new one count; `latest` is mid-way through replacing
 * the `latest` pointer (its temp file written, not yet renamed). Resume falls back to the newest valid
 * checkpoint when `latest` is missing or names nothing, and says so; `perf.jsonl` is cut back like
 * `metrics.jsonl`. Run in child processes on the built engine, as a user runs it.
 */
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import * as Launch from "./support/launch.js"

// 3 pretrain steps, a checkpoint after each (writes 1-3, the third at the stage's end), then an eval at
// step 3 and the re-save of step 3 after it (write 4).
const setup = () => Launch.tempRun("switch", Launch.tinyRecipe({ name: "tiny-switch", seed: 5, stages: [Launch.pretrain(3), Launch.finalEval(2, 1)] }))

const node = (command: "run" | "resume", arg: string) => Launch.engine({ command, arg, log: true })

const steps = (path: string) => readFileSync(path, "utf8").trim().split("\n").map((l) => (JSON.parse(l) as { step: number }).step)

const finalState = (dir: string) => ({ ...Launch.finalState(dir), perfSteps: steps(join(dir, "perf.jsonl")) })

const resumedLike = (dir: string, reference: ReturnType<typeof finalState>) => {
  const r = node("resume", dir)
  expect(r.status, r.stderr).toBe(0)
  const got = finalState(dir)
  Launch.expectSameEnd(got, reference)
  expect(got.perfSteps).toEqual(reference.perfSteps)
  return r.stdout
}

describe("a kill anywhere in a checkpoint write", () => {
  it("killed while the re-save of a step switches folders, or mid-way through replacing latest: latest still names a checkpoint, and resume ends bitwise identical", () => {
    const { file, runs } = setup()
    const a = node("run", file)
    expect(a.status, a.stderr).toBe(0)
    const reference = finalState(Launch.runDir(a))
    expect(reference.perfSteps).toEqual([1, 2, 3])

    const atSwitch = Launch.killedRun(file, runs, "4:switch")
    const named = readFileSync(join(atSwitch, "checkpoints", "latest"), "utf8").trim()
    expect(existsSync(join(atSwitch, "checkpoints", named, "checksums.json")), `latest names ${named}, which is not there`).toBe(true)
    resumedLike(atSwitch, reference)

    const atLatest = Launch.killedRun(file, runs, "4:latest")
    expect(readdirSync(join(atLatest, "checkpoints")).some((f) => f.startsWith("latest.tmp-"))).toBe(true)
    resumedLike(atLatest, reference)
    expect(readdirSync(join(atLatest, "checkpoints")).filter((f) => f.startsWith("latest.tmp-"))).toEqual([])
  }, 300_000)

  it("resume cuts perf.jsonl back to the checkpoint, and falls back to the newest valid checkpoint when latest is missing or names nothing", () => {
    const { file, runs } = setup()
    const a = node("run", file)
    expect(a.status, a.stderr).toBe(0)
    const reference = finalState(Launch.runDir(a))

    // Killed writing checkpoint 3 (step 3): latest is step 2, step 3's perf line is on disk.
    const dir = Launch.killedRun(file, runs, "3")
    expect(readFileSync(join(dir, "checkpoints", "latest"), "utf8").trim()).toBe("step-000002")
    expect(steps(join(dir, "perf.jsonl"))).toEqual([1, 2, 3])
    writeFileSync(join(dir, "checkpoints", "latest"), "step-000009\n")
    const out = resumedLike(dir, reference)
    expect(out).toMatch(/LOG .*checkpoints\/latest names step-000009, which is not there.*using the newest valid checkpoint, step-000002/)

    const again = Launch.killedRun(file, runs, "3")
    rmSync(join(again, "checkpoints", "latest"))
    const out2 = resumedLike(again, reference)
    expect(out2).toMatch(/LOG .*checkpoints\/latest is missing.*step-000001, step-000002.*using the newest valid checkpoint, step-000002/)
  }, 300_000)
})
