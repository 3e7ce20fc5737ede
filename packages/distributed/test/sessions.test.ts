/**
 * A trainer replaced by another of the same run (killed and resumed): the results of the old trainer's
 * tasks are not taken by the new one, even for the same group at the same version, and a worker holding
 * the old trainer's weights under a version number loads the new trainer's before it draws. Also which
 * failures count as transient (a stopping server's answer to a pending pull is one).
 */
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import * as Connection from "../src/Connection.js"
import * as Queues from "../src/Queues.js"
import * as Trainer from "../src/Trainer.js"
import type * as Weights from "../src/Weights.js"
import * as Wire from "../src/Wire.js"
import * as Worker from "../src/Worker.js"
import { describeNats, fakeDraw, prompts, run, server } from "./fixtures.js"

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex")
const weights = (head: number): Weights.Tensors => new Map([["embed", new Float32Array(300).fill(0.5)], ["head", new Float32Array(50).fill(head)]])
const fp = "rewards=a;backend=cpu"
/** What @nats-io/jetstream rejects a pull with on a status message (its JetStreamStatusError is not exported). */
const status = (description: string, code: number) => Object.assign(new Error(description), { name: "JetStreamStatusError", code })

describe("Connection.isTransient", () => {
  it("a pull ended by a stopping server (409 server shutdown, heartbeats missed) is retried; a deleted consumer or stream is not", () => {
    expect(Connection.isTransient(status("server shutdown", 409))).toBe(true)
    expect(Connection.isTransient(status("leadership change", 409))).toBe(true)
    expect(Connection.isTransient(status("consumer deleted", 409))).toBe(false)
    expect(Connection.isTransient(status("stream deleted", 409))).toBe(false)
    expect(Connection.isTransient(status("no responders", 503))).toBe(true)
    // The client's idle-heartbeat monitor gives a pending pull up this way while the server is down.
    expect(Connection.isTransient(Object.assign(new Error("heartbeats missed"), { name: "JetStreamError" }))).toBe(true)
    expect(Connection.isTransient(new Error("bad request"))).toBe(false)
  })
})

describeNats("trainer sessions", () => {
  it("a resumed trainer drops the old trainer's late result for the same group and version; the worker reloads that version", () =>
    run(Effect.gen(function*() {
      const srv = yield* server()
      const log: Array<string> = []
      const wc = yield* Connection.open({ url: srv.url, name: "w1" })
      const old = yield* Trainer.make(yield* Connection.open({ url: srv.url, name: "old" }), { runId: "r", fingerprint: fp, ackWaitMs: 2000 })
      yield* old.publishWeights(0, weights(1))
      yield* Effect.forkScoped(Worker.run(wc, {
        runId: "r", workerId: "w1", fingerprint: fp, ackWaitMs: 2000,
        draw: (p, meta) => Effect.succeed(fakeDraw(p, meta)),
        load: (version, _w, changed) => Effect.sync(() => log.push(`v${version} ${changed.join(",")}`)),
        onGroup: (t) => log.push(`g${t.groupId}`)
      }))
      yield* old.publish([{ groupId: 0, seed: 100, prompts: prompts(0) }])
      expect((yield* old.collect(1, { maxStaleness: 0, timeoutMs: 20_000 })).results.map((r) => r.workerId)).toEqual(["w1"])

      // The old trainer dies with group 1 out; its result lands afterwards, stamped with its session.
      const q = yield* Queues.make(yield* Connection.open({ url: srv.url, name: "late" }), { runId: "r" })
      const late = fakeDraw(prompts(1), { policyVersion: 9, seed: 100, groupId: 1 })
      yield* q.publishResult({ groupId: 1, policyVersion: 0, seed: 101, fingerprint: fp, session: old.session, workerId: "late", drawMs: 0 }, late)

      // The new trainer publishes version 0 with other weights, and group 1 at version 0 again.
      const resumed = yield* Trainer.make(yield* Connection.open({ url: srv.url, name: "resumed" }), { runId: "r", fingerprint: fp, ackWaitMs: 2000 })
      expect(resumed.session).not.toBe(old.session)
      yield* resumed.publishWeights(0, weights(2))
      yield* resumed.publish([{ groupId: 1, seed: 101, prompts: prompts(1) }])
      const got = yield* resumed.collect(1, { maxStaleness: 0, timeoutMs: 20_000 })
      expect(got.results.map((r) => r.workerId)).toEqual(["w1"])
      expect(got.duplicates).toBe(1)
      expect(hex(Wire.toIpc(got.results[0].scored))).toBe(hex(Wire.toIpc(fakeDraw(prompts(1), { policyVersion: 0, seed: 101, groupId: 1 }))))
      // w1 held version 0 of the old session: it fetched the new session's (only "head" differs) before group 1.
      expect(log).toEqual(["v0 embed,head", "g0", "v0 head", "g1"])
    })), 40_000)
})
