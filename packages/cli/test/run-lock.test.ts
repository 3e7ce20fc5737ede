/**
 * One writer per run directory, across processes, through the built `r1flow` command: while a process
 * holds a run's lock, `r1flow resume` of that run is refused naming the holder and changes nothing;
 * `r1flow eval` of it still works and writes only under `evals/standalone/`.
 */
import { RunDir, RunLock } from "@r1flow/engine"
import { Effect, Exit, Scope } from "effect"
import { readdirSync, readFileSync, writeFileSync } from "node:fs"
import { hostname } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { r1flow, tempRun, tinyRecipe } from "./support/launch.js"

describe("run.lock across processes", () => {
  it("r1flow resume is refused while another process holds the run; r1flow eval is not", async () => {
    const { file, runs } = tempRun("cli-lock", tinyRecipe({ name: "tiny-lock", seed: 2, checkpoint: { every: 1, keep: 10 } }))
    const made = r1flow(["run", file])
    expect(made.status, made.stderr).toBe(0)
    const root = join(runs, readdirSync(runs)[0])
    const dir = RunDir.at(root)
    writeFileSync(join(dir.checkpoints, "latest"), "step-000002\n")
    const metrics = readFileSync(dir.metrics)

    const scope = Effect.runSync(Scope.make())
    await Effect.runPromise(RunLock.acquire(dir, "test").pipe(Scope.provide(scope)))
    const refused = r1flow(["resume", root])
    const evaluated = r1flow(["eval", root])
    await Effect.runPromise(Scope.close(scope, Exit.void))

    expect(refused.status).toBe(1)
    expect(refused.stderr).toContain("RunLockedError")
    expect(refused.stderr).toContain(`r1flow test (pid ${process.pid} on ${hostname()}`)
    expect(readFileSync(dir.metrics)).toEqual(metrics)
    expect(readFileSync(join(dir.checkpoints, "latest"), "utf8")).toBe("step-000002\n")
    expect(evaluated.status, evaluated.stderr).toBe(0)
    expect(evaluated.stdout).toContain(join(root, "evals", "standalone") + "/")
    expect(readdirSync(join(dir.evals, "standalone"))).toHaveLength(1)
    expect(readFileSync(dir.metrics)).toEqual(metrics)
  }, 200_000)
})
