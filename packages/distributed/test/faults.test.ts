import { spawn, type ChildProcess } from "node:child_process"
import { mkdirSync } from "node:fs"
import { join } from "node:path"
import { Effect } from "effect"
import { build } from "rolldown"
import { beforeAll, expect, it } from "vitest"
import * as Connection from "../src/Connection.js"
import * as NatsServer from "../src/NatsServer.js"
import * as Trainer from "../src/Trainer.js"
import * as Worker from "../src/Worker.js"
import { describeNats, fakeDraw, prompts, run, server } from "./fixtures.js"

const out = join(import.meta.dirname, "..", "test-output", "worker-child.mjs")
const weights = new Map([["w", new Float32Array(16).fill(1)]])
const groups = (n: number) => Array.from({ length: n }, (_, g) => ({ groupId: g, seed: 100 + g, prompts: prompts(g, 4, 32) }))

/** A worker child process whose stdout lines are collected; killed when the scope closes. */
const child = (url: string, id: string, drawMs: number) =>
  Effect.acquireRelease(Effect.sync((): { readonly p: ChildProcess; readonly lines: Array<string> } => {
    const p = spawn(process.execPath, [out], { env: { ...process.env, R1FLOW_TEST_URL: url, R1FLOW_TEST_WORKER: id, R1FLOW_TEST_DRAW_MS: String(drawMs) }, stdio: ["ignore", "pipe", "inherit"] })
    const lines: Array<string> = []
    p.stdout.on("data", (d: Buffer) => lines.push(...d.toString("utf8").split("\n").filter((l) => l !== "")))
    return { p, lines }
  }), ({ p }) => Effect.sync(() => p.kill("SIGKILL")))

const expectExactlyOnceInOrder = (c: Trainer.Collection, n: number, from = 0) => {
  expect(c.results.map((r) => r.groupId)).toEqual(Array.from({ length: n }, (_, i) => from + i))
  for (const r of c.results) expect(r.scored.getChild("reward")!.toArray()).toEqual(fakeDraw(prompts(r.groupId, 4, 32), { policyVersion: 0, seed: 100 + r.groupId, groupId: r.groupId }).getChild("reward")!.toArray())
}

describeNats("faults", () => {
  beforeAll(async () => {
    // The child runs the package's TypeScript sources: bundle them (dependencies stay external) into one file.
    mkdirSync(join(out, ".."), { recursive: true })
    await build({
      input: join(import.meta.dirname, "worker-child.ts"),
      platform: "node",
      resolve: { conditionNames: ["@r1flow/source", "import", "default"] },
      external: [/^(effect|apache-arrow|@nats-io)(\/|$)/, /^node:/],
      output: { file: out, format: "esm" },
      logLevel: "silent"
    })
  }, 30_000)

  it("kill -9 of a worker process mid-group: its group is redelivered to the other worker, 0 lost, 0 counted twice", () =>
    run(Effect.gen(function*() {
      const srv = yield* server()
      const nc = yield* Connection.open({ url: srv.url })
      const trainer = yield* Trainer.make(nc, { runId: "r", fingerprint: "f", ackWaitMs: 1500 })
      yield* trainer.publishWeights(0, weights)
      yield* trainer.publish(groups(8))
      const a = yield* child(srv.url, "a", 600)
      const b = yield* child(srv.url, "b", 150)
      while (!a.lines.some((l) => l.startsWith("start "))) yield* Effect.sleep(20)
      a.p.kill("SIGKILL")
      const killedIn = a.lines.filter((l) => l.startsWith("start ")).at(-1)!.slice(6)
      expect(a.lines).not.toContain(`done ${killedIn}`)
      const got = yield* trainer.collect(8, { maxStaleness: 0, timeoutMs: 30_000 })
      expectExactlyOnceInOrder(got, 8)
      expect(got.results.find((r) => `g${r.groupId}` === killedIn)!.workerId).toBe("b")
      expect(b.lines).toContain(`done ${killedIn}`)
      expect(trainer.outstanding()).toBe(0)
    })), 45_000)

  it.each(["SIGKILL", "SIGTERM"] as const)("nats-server stopped (%s) and restarted on the same store mid-run: trainer and workers reconnect and finish every group once", (signal) =>
    run(Effect.gen(function*() {
      const srv = yield* server()
      const nc = yield* Connection.open({ url: srv.url, reconnectWaitMs: 500 })
      const trainer = yield* Trainer.make(nc, { runId: "r", fingerprint: "f", ackWaitMs: 2000 })
      for (const id of ["w1", "w2"]) {
        const wc = yield* Connection.open({ url: srv.url, name: id, reconnectWaitMs: 500 })
        yield* Effect.forkScoped(Worker.run(wc, { runId: "r", workerId: id, fingerprint: "f", ackWaitMs: 2000, draw: (p, m) => Effect.as(Effect.sleep(40), fakeDraw(p, m)), load: () => Effect.void }))
      }
      yield* trainer.publishWeights(0, weights)
      yield* trainer.publish(groups(20))
      expectExactlyOnceInOrder(yield* trainer.collect(5, { maxStaleness: 0, timeoutMs: 20_000 }), 5)
      // SIGTERM: the server answers pending pulls with 409 "server shutdown" before it goes; SIGKILL: it just goes.
      srv.process.kill(signal)
      yield* Effect.sleep(700) // clients see the connection drop and start reconnecting
      yield* NatsServer.start({ storeDir: srv.storeDir, port: srv.port })
      const rest = yield* trainer.collect(15, { maxStaleness: 0, timeoutMs: 40_000 })
      expectExactlyOnceInOrder(rest, 15, 5)
      expect(trainer.outstanding()).toBe(0)
    })), 60_000)
})
