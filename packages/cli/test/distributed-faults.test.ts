/**
 * Faults of a distributed run with the built `r1flow` on a real nats-server (skipped with a message when
 * there is none), each ending bitwise identical (metrics.jsonl, weights, final eval) to the single-process
 * per-group run of the same recipe (`distributed: { workers: 0 }`) at `maxStaleness: 0`:
 *
 * - the trainer SIGKILLed while writing a GRPO checkpoint (`R1FLOW_TEST_KILL_AT_CHECKPOINT`) and resumed
 *   with `r1flow resume`: what the killed trainer left on NATS (its step's groups, results and weights
 *   versions past the checkpoint) is not taken as new, and its local workers and nats-server do not
 *   outlive it;
 * - the nats-server stopped (SIGTERM, and SIGKILL) mid-GRPO and started again on the same port and store:
 *   the trainer and both workers reconnect and the run completes;
 * - every row of the rollouts parquet records the policy version it was sampled at and its staleness.
 *
 * At `maxStaleness: 1` a resumed run cannot be bitwise the uninterrupted one: the groups the killed trainer
 * drew ahead (one version stale) died with it, and the resumed trainer draws them again at its checkpoint's
 * version. What it must do is checked instead: each step trained once on a whole batch, versions and
 * staleness as stated, and everything up to the checkpoint as the uninterrupted run had it.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { arithmetic, bin, engine, engineRoot, expectSameEnd, finalEval, finalState, node, runDir, tempRun, tinyRecipe } from "./support/launch.js"
import { background, dirOf, freePort, natsServer, read, skipNotice, slowChars, waitFor } from "./support/nats.js"

if (natsServer === undefined) skipNotice("distributed-faults.test")

/** 2 pretrain steps, 3 GRPO steps of 3 groups of 2, a checkpoint after every step (so 4 is GRPO's 2nd). */
const recipe = (distributed: Record<string, unknown>, ms: number, loss: Record<string, unknown> = {}) => tinyRecipe({
  seed: 5,
  task: arithmetic(32, 2),
  corpus: { count: 32 },
  checkpoint: { every: 1, keep: 2 },
  stages: [
    { stage: "pretrain", config: { steps: 2, batchSize: 4 } },
    {
      stage: "grpo",
      config: {
        steps: 3, promptsPerStep: 3, groupSize: 2, sampling: { maxNewTokens: 6, temperature: 1 },
        rewards: [{ plugin: "./plugins/chars.mjs", config: { ms } }],
        update: { optimizer: { learningRate: 0.01 }, loss },
        distributed
      }
    },
    finalEval(1, 0)
  ]
})

const setup = (prefix: string, distributed: Record<string, unknown>, ms = 100, loss: Record<string, unknown> = {}) => {
  const t = tempRun(prefix, recipe(distributed, ms, loss))
  mkdirSync(join(t.base, "plugins"))
  writeFileSync(join(t.base, "plugins", "chars.mjs"), slowChars)
  return t
}

/** The single-process per-group run (its numbers do not depend on the reward's speed). */
const reference = () => {
  const { file } = setup("faults-ref", { workers: 0 }, 0)
  const r = engine({ command: "run", arg: file })
  expect(r.status, r.stderr).toBe(0)
  return runDir(r)
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** nats-server with JetStream on 127.0.0.1:`port`, store in `store`; resolves once it accepts connections. */
const startServer = async (port: number, store: string) => {
  const p = spawn(natsServer!, ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", store], { stdio: ["ignore", "ignore", "pipe"] })
  let log = ""
  p.stderr?.on("data", (d: Buffer) => (log += d.toString("utf8")))
  await waitFor(`nats-server on ${port}`, () => /Server is ready/.test(log), 15_000)
  return p
}

const stopServer = (p: ChildProcess, signal: NodeJS.Signals) => new Promise<void>((resolve) => {
  if (p.exitCode !== null || p.signalCode !== null) return resolve()
  p.once("exit", () => resolve())
  p.kill(signal)
})

/** The `"step":N` of each metrics.jsonl line. */
const metricSteps = (dir: string) => read(join(dir, "metrics.jsonl")).trim().split("\n").map((l) => (JSON.parse(l) as { step: number }).step)

/** The `policy_version` and `staleness` columns of `<dir>/rollouts/step-N.parquet`, read by parquet-wasm. */
const versionColumns = (dir: string, step: number) => {
  const path = join(dir, "rollouts", `step-${String(step).padStart(6, "0")}.parquet`)
  const script = `
import { createRequire } from "node:module"
const require = createRequire(${JSON.stringify(join(engineRoot, "package.json"))})
const { readParquet } = await import(require.resolve("parquet-wasm"))
const { tableFromIPC } = await import(require.resolve("apache-arrow"))
const { readFileSync } = await import("node:fs")
const t = tableFromIPC(readParquet(readFileSync(${JSON.stringify(path)})).intoIPCStream())
console.log(JSON.stringify({ version: [...t.getChild("policy_version").toArray()], staleness: [...t.getChild("staleness").toArray()] }))
`
  const r = node(script)
  expect(r.status, r.stderr).toBe(0)
  return JSON.parse(r.stdout) as { version: Array<number>; staleness: Array<number> }
}

describe.skipIf(natsServer === undefined)("distributed rollout faults (nats-server)", () => {
  let ref = ""
  beforeAll(() => {
    ref = reference()
  }, 120_000)

  it("every rollout row records its policy version and staleness; the single-process run's are its step's and 0", () => {
    // GRPO step k (global step 2 + k) samples at version 2 + k - 1: the global step before its update.
    for (const step of [3, 4, 5]) expect(versionColumns(ref, step)).toEqual({ version: Array(6).fill(step - 1), staleness: Array(6).fill(0) })
  })

  it("the trainer SIGKILLed at a GRPO checkpoint and resumed with its workers ends as the single-process run", async () => {
    const { file } = setup("faults-resume", { ackWaitMs: 2000 })
    const killed = background(["run", file, "--workers", "2"], { R1FLOW_TEST_KILL_AT_CHECKPOINT: "4" })
    const k = await killed.done
    expect(k.signal, k.out).toBe("SIGKILL")
    const dir = dirOf(k.out)
    expect(readFileSync(join(dir, "checkpoints", "latest"), "utf8").trim()).toBe("step-000003")
    // Step 4 was drawn, trained and recorded, then lost with the process: its groups' results were taken.
    expect(read(join(dir, "metrics.jsonl"))).toContain('{"step":4,')
    // The killed trainer's local workers and nats-server go with it (they would hold the store and the queues).
    const pids = [...read(join(dir, "nats", "logs", "local-1.log")).matchAll(/\(pid (\d+)\)/g), ...read(join(dir, "nats", "logs", "local-2.log")).matchAll(/\(pid (\d+)\)/g)].map((m) => Number(m[1]))
    expect(pids).toHaveLength(2)
    await waitFor("the killed run's workers to exit", () => pids.every((p) => !alive(p)), 20_000)
    // Its nats-server outlives it (nothing can stop a child of a SIGKILLed process); the resume stops it first.
    const orphan = Number(read(join(dir, "nats", "nats-server.pid")).trim())
    expect(alive(orphan)).toBe(true)

    const resumed = spawnSync(process.execPath, [bin, "resume", dir], { encoding: "utf8", timeout: 300_000 })
    expect(resumed.status, resumed.stdout + resumed.stderr).toBe(0)
    expect(resumed.stdout + resumed.stderr).toContain(`nats-server ${orphan} still serves`)
    expect(alive(orphan)).toBe(false)
    expectSameEnd(finalState(dir), finalState(ref))
    // The resumed trainer drew steps 4 and 5 again on its workers, at versions 3 and 4.
    expect(versionColumns(dir, 4).version).toEqual(Array(6).fill(3))
    expect(versionColumns(dir, 5).version).toEqual(Array(6).fill(4))
  }, 300_000)

  it("at maxStaleness 1, the trainer SIGKILLed at a GRPO checkpoint and resumed: every step trained once, the groups drawn ahead drawn again at the checkpoint's version", async () => {
    const async = { ackWaitMs: 2000, maxStaleness: 1 }, tis = { tisCap: 2 }
    const whole = setup("faults-async-whole", async, 100, tis)
    const w = await background(["run", whole.file, "--workers", "2"]).done
    expect(w.status, w.out).toBe(0)
    const wholeDir = dirOf(w.out)
    // Uninterrupted: GRPO's first step samples at version 2; the next ones were drawn during the update before, one version behind.
    expect(versionColumns(wholeDir, 3)).toEqual({ version: Array(6).fill(2), staleness: Array(6).fill(0) })
    expect(versionColumns(wholeDir, 4)).toEqual({ version: Array(6).fill(2), staleness: Array(6).fill(1) })

    const { file } = setup("faults-async-resume", async, 100, tis)
    const k = await background(["run", file, "--workers", "2"], { R1FLOW_TEST_KILL_AT_CHECKPOINT: "4" }).done
    expect(k.signal, k.out).toBe("SIGKILL")
    const dir = dirOf(k.out)
    expect(readFileSync(join(dir, "checkpoints", "latest"), "utf8").trim()).toBe("step-000003")
    const resumed = spawnSync(process.execPath, [bin, "resume", dir], { encoding: "utf8", timeout: 300_000 })
    expect(resumed.status, resumed.stdout + resumed.stderr).toBe(0)
    // Step 4's groups, drawn ahead at version 2 by the killed trainer, are drawn again at the checkpoint's version 3 (fresh);
    // step 5's were drawn during step 4's update, one behind again.
    expect(versionColumns(dir, 4)).toEqual({ version: Array(6).fill(3), staleness: Array(6).fill(0) })
    expect(versionColumns(dir, 5)).toEqual({ version: Array(6).fill(3), staleness: Array(6).fill(1) })
    // One metrics line per step (the killed step 4's line replaced, not repeated); up to the checkpoint the uninterrupted run's.
    expect(metricSteps(dir)).toEqual(metricSteps(wholeDir))
    const upTo3 = (d: string) => read(join(d, "metrics.jsonl")).trim().split("\n").filter((l) => (JSON.parse(l) as { step: number }).step <= 3)
    expect(upTo3(dir)).toEqual(upTo3(wholeDir))
  }, 300_000)

  for (const signal of ["SIGTERM", "SIGKILL"] as const) {
    it(`the nats-server ${signal}ed mid-GRPO and restarted on its port and store: trainer and workers reconnect, the run ends as the single-process run`, async () => {
      const port = await freePort()
      const store = mkdtempSync(join(tmpdir(), "r1flow-faults-nats-"))
      let server = await startServer(port, store)
      try {
        const { file } = setup(`faults-restart-${signal.toLowerCase()}`, { ackWaitMs: 2000 }, 300)
        const run = background(["run", file, "--nats", `nats://127.0.0.1:${port}`, "--workers", "2"])
        await waitFor("the run directory", () => /run directory: \S+/.test(run.output()))
        const dir = dirOf(run.output())
        const logs = join(dir, "nats", "logs")
        const groups = () => (existsSync(logs) ? readdirSync(logs) : []).map((f) => (read(join(logs, f)).match(/: group \d+ at version/g) ?? []).length).reduce((a, b) => a + b, 0)
        // Down after the first GRPO step's groups (3 of 9) are in, for long enough that pulls and publishes fail.
        await waitFor("the first step's groups", () => groups() >= 3)
        await stopServer(server, signal)
        await new Promise((r) => setTimeout(r, 3000))
        server = await startServer(port, store)
        const r = await run.done
        expect(r.status, r.out).toBe(0)
        expectSameEnd(finalState(dir), finalState(ref))
      } finally {
        await stopServer(server, "SIGTERM")
      }
    }, 300_000)
  }
})
