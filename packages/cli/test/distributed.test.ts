/**
 * Distributed rollout with the built `r1flow`, on a real nats-server (skipped with a message when there is
 * none): `run --workers 2` with `maxStaleness: 0` ends bitwise identical (metrics.jsonl, weights, final eval)
 * to the single-process run of the same recipe drawing group by group (`distributed: { workers: 0 }`);
 * so does a run one of whose two workers is SIGKILLed mid-run (its group goes to the other after the ack
 * wait: none lost, none counted twice, or the metrics would differ); a worker whose reward config differs
 * from the trainer's is refused with a message naming the key, and the run goes on without it.
 */
import { spawn, spawnSync } from "node:child_process"
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { arithmetic, bin, engine, finalEval, finalState, runDir, tempRun, tinyRecipe } from "./support/launch.js"
import { background, dirOf, freePort, natsServer, read, skipNotice, slowChars, waitFor } from "./support/nats.js"

if (natsServer === undefined) skipNotice("distributed.test")

const grpo = (distributed: Record<string, unknown>) => ({
  stage: "grpo",
  config: {
    steps: 3, promptsPerStep: 3, groupSize: 2, sampling: { maxNewTokens: 6, temperature: 1 },
    rewards: [{ plugin: "./plugins/chars.mjs", config: { ms: 300 } }],
    update: { optimizer: { learningRate: 0.01 } },
    distributed
  }
})

const recipe = (distributed: Record<string, unknown>) => tinyRecipe({
  seed: 5,
  task: arithmetic(32, 2),
  corpus: { count: 32 },
  checkpoint: { every: 0, keep: 2 },
  stages: [{ stage: "pretrain", config: { steps: 2, batchSize: 4 } }, grpo(distributed), finalEval(1, 0)]
})

/** `tempRun` with the reward plugin written beside the recipe. */
const setup = (prefix: string, distributed: Record<string, unknown>) => {
  const t = tempRun(prefix, recipe(distributed))
  mkdirSync(join(t.base, "plugins"))
  writeFileSync(join(t.base, "plugins", "chars.mjs"), slowChars)
  return t
}

/** The single-process per-group run every distributed run must equal. */
const reference = () => {
  const { file } = setup("dist-ref", { workers: 0, ackWaitMs: 2000 })
  const r = engine({ command: "run", arg: file })
  expect(r.status, r.stderr).toBe(0)
  return finalState(runDir(r))
}

describe.skipIf(natsServer === undefined)("distributed rollout (nats-server)", () => {
  it("run --workers 2 (maxStaleness 0) equals the single-process per-group run; a SIGKILLed worker loses and duplicates nothing", async () => {
    const ref = reference()

    const { file } = setup("dist-two", { ackWaitMs: 2000 })
    const two = background(["run", file, "--workers", "2"])
    const r = await two.done
    expect(r.status, r.out).toBe(0)
    const dir = dirOf(r.out)
    const got = finalState(dir)
    expect(got.metrics).toBe(ref.metrics)
    expect(Buffer.compare(got.weights, ref.weights)).toBe(0)
    expect(got.evals).toEqual(ref.evals)
    const groups = (id: string) => (read(join(dir, "nats", "logs", `${id}.log`)).match(/: group \d+ at version/g) ?? []).length
    expect(groups("local-1") + groups("local-2")).toBeGreaterThanOrEqual(9)

    // The per-group draw is not the default one: the same recipe without the section has other numbers.
    const { file: plain } = setup("dist-plain", { workers: 0 })
    const plainRecipe = JSON.parse(readFileSync(plain, "utf8"))
    delete plainRecipe.stages[1].config.distributed
    writeFileSync(plain, JSON.stringify(plainRecipe))
    const p = engine({ command: "run", arg: plain })
    expect(p.status, p.stderr).toBe(0)
    expect(finalState(runDir(p)).metrics).not.toBe(ref.metrics)

    // Again, with worker local-1 SIGKILLed inside a group: after a group it acked, while it draws the next.
    const { file: file2 } = setup("dist-kill", { ackWaitMs: 2000 })
    const killed = background(["run", file2, "--workers", "2"])
    await waitFor("the run directory", () => /run directory: \S+/.test(killed.output()))
    const dir2 = dirOf(killed.output())
    const log1 = join(dir2, "nats", "logs", "local-1.log")
    const inside = () => {
      const text = read(log1)
      const drawing = [...text.matchAll(/drawing group (\d+)/g)].map((m) => m[1])
      const done = new Set([...text.matchAll(/: group (\d+) at version/g)].map((m) => m[1]))
      return done.size > 0 ? drawing.find((g) => !done.has(g)) : undefined
    }
    await waitFor("local-1 inside its second group", () => inside() !== undefined)
    const lost = inside()!
    const pid = Number(/\(pid (\d+)\)/.exec(read(log1))?.[1])
    process.kill(pid, "SIGKILL")
    const k = await killed.done
    expect(k.status, k.out).toBe(0)
    const after = finalState(dir2)
    expect(after.metrics).toBe(ref.metrics)
    expect(Buffer.compare(after.weights, ref.weights)).toBe(0)
    // The group local-1 died in was drawn again by local-2 (after the ack wait) and counted once.
    expect(read(join(dir2, "nats", "logs", "local-2.log"))).toMatch(new RegExp(`: group ${lost} at version`))
    expect(read(log1)).not.toMatch(new RegExp(`: group ${lost} at version`))
  }, 600_000)

  it("maxStaleness 1: the next step's groups are drawn during the update, one version stale, with the TIS correction", async () => {
    const { file } = setup("dist-async", { ackWaitMs: 2000, maxStaleness: 1 })
    const r = await background(["run", file, "--workers", "2", "--set", "stages.1.config.update.loss.tisCap=2"]).done
    expect(r.status, r.out).toBe(0)
    const steps = readFileSync(join(dirOf(r.out), "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l)).filter((m) => "async/staleness_max" in m)
    // Step 1's groups are published at its own version; steps 2 and 3 train on groups drawn a version earlier.
    expect(steps.map((m) => m["async/staleness_max"])).toEqual([0, 1, 1])
    // The TIS weights w = min(π_old / π_sampler, 2) are logged each step; on-policy they are 1 up to float noise,
    // on the stale steps π_sampler is the previous version's, so they depart from 1.
    const tis = steps.map((m) => m["sampling/importance_sampling_ratio/mean"] as number)
    expect(tis.every((w) => Number.isFinite(w))).toBe(true)
    expect(Math.abs(tis[0] - 1)).toBeLessThan(1e-4)
    expect(Math.min(Math.abs(tis[1] - 1), Math.abs(tis[2] - 1))).toBeGreaterThan(1e-4)
  }, 600_000)

  it("maxStaleness 1 without update.loss.tisCap is refused before the run starts, naming the key", () => {
    const { file } = setup("dist-async-refused", { maxStaleness: 1 })
    const r = spawnSync(process.execPath, [bin, "run", file], { encoding: "utf8", timeout: 120_000 })
    expect(r.status).toBe(1)
    expect(r.stderr).toContain("update.loss.tisCap")
  })

  it("a worker whose reward config differs from the trainer's is refused, naming the key; the run completes", async () => {
    const port = await freePort()
    const store = mkdtempSync(join(tmpdir(), "r1flow-dist-nats-"))
    const server = spawn(natsServer!, ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", store], { stdio: "ignore" })
    try {
      const url = `nats://127.0.0.1:${port}`
      await new Promise((r) => setTimeout(r, 500))
      const { file } = setup("dist-refuse", { ackWaitMs: 2000 })
      const trainer = background(["run", file, "--nats", url, "--workers", "1"])
      const bad = spawnSync(process.execPath, [bin, "worker", "--nats", url, "--recipe", file, "--id", "odd", "--set", "stages.1.config.rewards.0.config.ms=1"], { encoding: "utf8", timeout: 180_000 })
      expect(bad.status).toBe(1)
      expect(bad.stderr).toContain("worker odd refused by run tiny-grpo")
      expect(bad.stderr).toContain("rewards: trainer")
      expect(bad.stderr).toContain(`"ms":1`)
      const t = await trainer.done
      expect(t.status, t.out).toBe(0)
    } finally {
      server.kill("SIGTERM")
    }
  }, 600_000)
})
