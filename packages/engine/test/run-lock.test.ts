/**
 * One writer per run directory: run folders are created exclusively (two runs started in the same
 * second get two), `run.lock` names the writer (pid, host) and refuses a second one while it lives, a
 * lock whose process is gone is taken over, and `eval` of a run writes nothing the trainer owns.
 */
import { Exit, Scope } from "effect"
import { spawnSync } from "node:child_process"
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { hostname } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import * as Run from "../src/Run.js"
import * as RunDir from "../src/RunDir.js"
import * as RunLock from "../src/RunLock.js"
import { run, runFail, tempDir } from "./helpers.js"
import { tinyRecipe } from "./support/recipes.js"

/** Holds `dir`'s lock as a live writer would, until the returned release is called. */
const hold = async (dir: RunDir.RunDir) => {
  const scope = await run(Scope.make())
  await run(RunLock.acquire(dir, "test").pipe(Scope.provide(scope)))
  return () => run(Scope.close(scope, Exit.void))
}

/** A pid that is certainly not running: a child that has exited and been reaped. */
const deadPid = () => spawnSync(process.execPath, ["-e", ""]).pid!

const snapshot = (dir: RunDir.RunDir) => ({
  metrics: readFileSync(dir.metrics),
  perf: readFileSync(join(dir.root, "perf.jsonl")),
  evals: readdirSync(dir.evals).filter((f) => f !== "standalone").sort(),
  checkpoints: readdirSync(dir.checkpoints).sort()
})

describe("run directories have one writer at a time", () => {
  it("two runs started in the same second get two folders", async () => {
    const base = tempDir("runs-same-second")
    const now = new Date("2026-01-02T03:04:05Z")
    const a = await run(RunDir.create(base, "tiny", now))
    const b = await run(RunDir.create(base, "tiny", now))
    expect(a.root).not.toBe(b.root)
    expect(readdirSync(base).sort()).toEqual(["tiny-20260102-030405Z", "tiny-20260102-030405Z-2"])
  })

  it("a second writer is refused while the first lives; a stale lock (dead pid) is taken over", async () => {
    const { file } = tinyRecipe("lock")
    const { dir } = await run(Run.run(file, { log: () => {} }))
    // Mid-run, as far as resume can tell: the latest checkpoint is step 2 of 3.
    writeFileSync(join(dir.checkpoints, "latest"), "step-000002\n")
    expect(existsSync(dir.lock)).toBe(false)
    const release = await hold(dir)
    const before = snapshot(dir)
    const refused = (await runFail(Run.resume(dir.root, { log: () => {} }))) as { _tag: string; message: string }
    expect(refused._tag).toBe("RunLockedError")
    expect(refused.message).toContain(`pid ${process.pid} on ${hostname()}`)
    expect(snapshot(dir)).toEqual(before)
    await release()
    expect(existsSync(dir.lock)).toBe(false)

    // A writer that was killed leaves its lock behind: the next one takes it over and says so.
    writeFileSync(dir.lock, JSON.stringify({ pid: deadPid(), host: hostname(), since: "2026-01-02T03:04:05.000Z", command: "run", token: "dead" }))
    const lines: Array<string> = []
    await run(Run.resume(dir.root, { log: (l) => lines.push(l) }))
    expect(lines.some((l) => /stale lock/.test(l) && l.includes("r1flow run"))).toBe(true)
    expect(existsSync(dir.lock)).toBe(false)
  }, 120_000)

  it("eval of a run while it trains writes only under evals/standalone/, never into metrics.jsonl", async () => {
    const { file } = tinyRecipe("eval-during-run")
    const { dir } = await run(Run.run(file, { log: () => {} }))
    // The trainer is alive and mid-write: it holds the lock, and its next metrics line is half written.
    const release = await hold(dir)
    writeFileSync(dir.metrics, readFileSync(dir.metrics, "utf8") + '{"step":4,"pretrain/lo')
    const before = snapshot(dir)
    const a = await run(Run.evaluate(dir.root, { data: "held-out", samples: 1, temperature: 0, maxNewTokens: 4, log: () => {} }))
    const b = await run(Run.evaluate(dir.root, { data: "held-out", samples: 1, temperature: 0, maxNewTokens: 4, log: () => {} }))
    expect(snapshot(dir)).toEqual(before)
    expect(a.file).not.toBe(b.file)
    for (const r of [a, b]) {
      expect(r.file.startsWith(join(dir.evals, "standalone") + "/")).toBe(true)
      expect(JSON.parse(readFileSync(r.file, "utf8")).accuracy).toBe(r.accuracy)
    }
    await release()
  }, 120_000)
})
