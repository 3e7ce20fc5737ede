/**
 * One writer per run directory, across processes, through the built `r1flow` command: while a process
 * holds a run's lock, `r1flow resume` of that run is refused naming the holder and changes nothing;
 * `r1flow eval` of it still works and writes only under `evals/standalone/`.
 */
import { RunDir, RunLock } from "@r1flow/engine"
import { Effect, Exit, Scope } from "effect"
import { spawnSync } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { hostname, tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"

const bin = join(dirname(fileURLToPath(import.meta.url)), "..", "bin", "r1flow.mjs")
const r1flow = (...args: Array<string>) => spawnSync(process.execPath, [bin, ...args], { encoding: "utf8", timeout: 120_000 })

const tiny = (base: string) => {
  const file = join(base, "tiny.json")
  writeFileSync(file, JSON.stringify({
    name: "tiny-lock",
    seed: 2,
    backend: "wasm",
    runsDir: join(base, "runs"),
    task: { kind: "arithmetic", digits: [1, 2], ops: ["+"], train: 16, test: 2 },
    corpus: { count: 16 },
    tokenizer: { kind: "compact", base: "cl100k_base", size: 512 },
    model: { dModel: 16, nLayers: 1, nHeads: 2, nKvHeads: 1, dFf: 32, maxSeqLen: 128 },
    checkpoint: { every: 1, keep: 10 },
    stages: [
      { stage: "pretrain", config: { steps: 3, batchSize: 2 } },
      { stage: "eval", name: "final", config: { samples: 1, sampling: { maxNewTokens: 4, temperature: 0 } } }
    ]
  }))
  return file
}

describe("run.lock across processes", () => {
  it("r1flow resume is refused while another process holds the run; r1flow eval is not", async () => {
    const base = mkdtempSync(join(tmpdir(), "r1flow-cli-lock-"))
    const made = r1flow("run", tiny(base))
    expect(made.status, made.stderr).toBe(0)
    const root = join(base, "runs", readdirSync(join(base, "runs"))[0])
    const dir = RunDir.at(root)
    writeFileSync(join(dir.checkpoints, "latest"), "step-000002\n")
    const metrics = readFileSync(dir.metrics)

    const scope = Effect.runSync(Scope.make())
    await Effect.runPromise(RunLock.acquire(dir, "test").pipe(Scope.provide(scope)))
    const refused = r1flow("resume", root)
    const evaluated = r1flow("eval", root)
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
