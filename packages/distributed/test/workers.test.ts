import { Effect, Fiber } from "effect"
import { expect, it } from "vitest"
import * as Connection from "../src/Connection.js"
import * as Trainer from "../src/Trainer.js"
import type * as Weights from "../src/Weights.js"
import * as Wire from "../src/Wire.js"
import * as Worker from "../src/Worker.js"
import { describeNats, fakeDraw, prompts, run, server } from "./fixtures.js"

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex")
const weights = (version: number): Weights.Tensors =>
  new Map([["embed", Float32Array.from({ length: 3000 }, (_, i) => i * 0.5)], ["head", new Float32Array(500).fill(version)]])

const startWorker = (url: string, workerId: string, log: Array<string>, fingerprint = "rewards=a;backend=cpu") =>
  Effect.flatMap(Connection.open({ url, name: workerId }), (nc) =>
    Effect.forkScoped(Worker.run(nc, {
      runId: "r", workerId, fingerprint, ackWaitMs: 2000,
      draw: (p, meta) => Effect.as(Effect.sleep(20), fakeDraw(p, meta)),
      load: (version, _w, changed) => Effect.sync(() => log.push(`${workerId} v${version} ${changed.join(",")}`)),
      onGroup: (t) => log.push(`${workerId} g${t.groupId}`)
    })))

describeNats("trainer and workers", () => {
  it("two workers process every group exactly once; results come back in group order at the version they sampled", () =>
    run(Effect.gen(function*() {
      const srv = yield* server({ maxPayload: 8192 })
      const nc = yield* Connection.open({ url: srv.url, name: "trainer" })
      const trainer = yield* Trainer.make(nc, { runId: "r", fingerprint: "rewards=a;backend=cpu", ackWaitMs: 2000 })
      const log: Array<string> = []
      yield* startWorker(srv.url, "w1", log)
      yield* startWorker(srv.url, "w2", log)
      yield* trainer.publishWeights(0, weights(0))
      const N = 12
      yield* trainer.publish(Array.from({ length: N }, (_, g) => ({ groupId: g, seed: 1000 + g, prompts: prompts(g, 4, 64) })))
      const first = yield* trainer.collect(N, { maxStaleness: 0, timeoutMs: 20_000 })
      expect(first.results.map((r) => r.groupId)).toEqual(Array.from({ length: N }, (_, g) => g))
      expect(first.duplicates).toBe(0)
      for (const r of first.results) {
        expect(r.policyVersion).toBe(0)
        expect(r.staleness).toBe(0)
        expect(hex(Wire.toIpc(r.scored))).toBe(hex(Wire.toIpc(fakeDraw(prompts(r.groupId, 4, 64), { policyVersion: 0, seed: 1000 + r.groupId, groupId: r.groupId }))))
      }
      const drawn = log.filter((l) => / g\d+$/.test(l))
      expect(drawn.length).toBe(N)
      expect(new Set(drawn.map((l) => l.split(" ")[0])).size).toBe(2) // both workers took part

      // Version 1 changes only "head": a worker fetches just that tensor, after the KV says so.
      yield* trainer.publishWeights(1, weights(1))
      yield* trainer.publish([{ groupId: N, seed: 7, prompts: prompts(N) }])
      const second = yield* trainer.collect(1, { maxStaleness: 0, timeoutMs: 20_000 })
      expect(second.results[0].policyVersion).toBe(1)
      expect(log.filter((l) => l.includes(" v1 "))).toEqual(expect.arrayContaining([expect.stringMatching(/^w\d v1 head$/)]))
      expect(log.filter((l) => l.includes(" v1 ")).every((l) => l.endsWith(" head"))).toBe(true)
    })), 40_000)

  it("a stale result is requeued at the current version with its seed; maxStaleness 1 accepts it with its staleness", () =>
    run(Effect.gen(function*() {
      const srv = yield* server()
      const nc = yield* Connection.open({ url: srv.url })
      const trainer = yield* Trainer.make(nc, { runId: "r", fingerprint: "rewards=a;backend=cpu", ackWaitMs: 2000 })
      yield* trainer.publishWeights(0, weights(0))
      yield* trainer.publish([0, 1].map((g) => ({ groupId: g, seed: g, prompts: prompts(g) })))
      const log: Array<string> = []
      yield* startWorker(srv.url, "w1", log)
      yield* Effect.sleep(1500) // both drawn at version 0
      yield* trainer.publishWeights(1, weights(1))
      const got = yield* trainer.collect(1, { maxStaleness: 1, timeoutMs: 20_000 })
      expect(got.results.map((r) => [r.groupId, r.policyVersion, r.staleness])).toEqual([[0, 0, 1]])
      const sync = yield* trainer.collect(1, { maxStaleness: 0, timeoutMs: 20_000 })
      expect(sync.requeued).toEqual([1])
      expect(sync.results.map((r) => [r.groupId, r.policyVersion, r.staleness, r.seed])).toEqual([[1, 1, 0, 1]])
    })), 40_000)

  it("a worker whose fingerprint differs from the trainer's is refused, saying both", () =>
    run(Effect.gen(function*() {
      const srv = yield* server()
      const nc = yield* Connection.open({ url: srv.url })
      yield* Trainer.make(nc, { runId: "r", fingerprint: "rewards=a;backend=cpu" })
      const fiber = yield* startWorker(srv.url, "odd", [], "rewards=b;backend=wasm")
      const error = yield* Effect.flip(Fiber.join(fiber))
      expect(error).toBeInstanceOf(Worker.HandshakeError)
      expect((error as Worker.HandshakeError).message).toBe(`worker odd refused by run r: its fingerprint "rewards=b;backend=wasm" differs from the trainer's "rewards=a;backend=cpu" (reward plugins and backend must match the trainer's)`)
    })))
})
