import { Batch } from "@r1flow/core"
import { jetstream } from "@nats-io/jetstream"
import { Effect } from "effect"
import { expect, it } from "vitest"
import * as Connection from "../src/Connection.js"
import * as NatsServer from "../src/NatsServer.js"
import * as Queues from "../src/Queues.js"
import * as Wire from "../src/Wire.js"
import { describeNats, fakeDraw, prompts, run, server } from "./fixtures.js"

const bytes = (b: Uint8Array) => Buffer.from(b).toString("hex")

it("frames reassemble in any order and refuse a flipped byte, a missing frame and a foreign frame by message id", () =>
  run(Effect.gen(function*() {
    const batch = fakeDraw(prompts(3, 16, 64), { policyVersion: 2, seed: 9, groupId: 3 })
    const frames = yield* Wire.encode(batch, { messageId: "m1", maxPayload: 2048 })
    expect(frames.length).toBeGreaterThan(4)
    // Room is left for the NATS headers (Nats-Msg-Id) that count against max_payload too.
    for (const f of frames) expect(f.length).toBeLessThanOrEqual(2048 - 256)
    const back = yield* Wire.decode("m1", [...frames].reverse(), Batch.Scored)
    expect(bytes(Wire.toIpc(back))).toBe(bytes(Wire.toIpc(batch)))

    const flipped = frames.map((f, i) => (i === 2 ? Uint8Array.from(f, (b, j) => (j === f.length - 1 ? b ^ 1 : b)) : f))
    const corrupt = yield* Effect.flip(Wire.decode("m1", flipped, Batch.Scored))
    expect(corrupt.reason).toBe("Corrupt")
    expect(corrupt.message).toMatch(/message m1: frame 3\/\d+ fails its sha256 check/)

    const missing = yield* Effect.flip(Wire.decode("m1", frames.filter((_, i) => i !== 1), Batch.Scored))
    expect(missing.reason).toBe("Missing")
    expect(missing.message).toContain("message m1: frame(s) 2 of")

    const other = yield* Wire.encode(batch, { messageId: "m2", maxPayload: 2048 })
    const foreign = yield* Effect.flip(Wire.decode("m1", [...frames.slice(1), other[0]], Batch.Scored))
    expect(foreign.reason).toBe("Foreign")
  })))

it("decode checks the Arrow schema like a stage does", () =>
  run(Effect.gen(function*() {
    const frames = yield* Wire.encode(prompts(1), { messageId: "p1", maxPayload: 1 << 20 })
    const error = yield* Effect.flip(Wire.decode("p1", frames, Batch.Scored))
    expect(error.reason).toBe("Schema")
    expect(error.message).toMatch(/message p1: does not match scored: missing column "completion"/)
  })))

describeNats("over nats-server", () => {
  it("an error names the binary when nats-server is not where it was said to be", () =>
    run(Effect.gen(function*() {
      const error = yield* Effect.flip(server({ binary: "/nonexistent/nats-server" }))
      expect(error).toBeInstanceOf(NatsServer.NatsServerError)
      expect(error.message).toContain("nats-server")
    })))

  it("a server with a user and password: the right credentials connect, none are refused with the url named", () =>
    run(Effect.gen(function*() {
      const srv = yield* server({ user: "trainer", password: "s3cret" })
      const nc = yield* Connection.open({ url: srv.url, user: "trainer", password: "s3cret" })
      expect(nc.isClosed()).toBe(false)
      const error = yield* Effect.flip(Connection.open({ url: srv.url, user: "trainer", password: "wrong" }))
      expect(error.message).toContain(`cannot connect to ${srv.url}`)
      expect(Connection.fromEnv({ url: srv.url }, { R1FLOW_NATS_USER: "u", R1FLOW_NATS_PASSWORD: "p" })).toMatchObject({ user: "u", password: "p" })
    })))

  it("a batch bigger than max_payload goes through JetStream in frames and comes back byte for byte", () =>
    run(Effect.gen(function*() {
      const srv = yield* server({ maxPayload: 4096 })
      const nc = yield* Connection.open({ url: srv.url })
      expect(Connection.maxPayload(nc)).toBe(4096)
      const q = yield* Queues.make(nc, { runId: "wire" })
      const batch = prompts(5, 32, 128) // ≈ 20 KB of IPC: several frames
      const { task } = yield* q.publishTask({ groupId: 5, policyVersion: 0, seed: 1, fingerprint: "f", session: "s" }, batch)
      expect(task.frames).toBeGreaterThan(4)
      const back = yield* q.batch(task, Batch.Prompts)
      expect(bytes(Wire.toIpc(back))).toBe(bytes(Wire.toIpc(batch)))

      // A frame overwritten on the server with damaged bytes is refused, naming the message.
      const js = jetstream(nc)
      const frames = yield* Wire.encode(batch, { messageId: task.messageId, maxPayload: 4096 })
      const bad = Uint8Array.from(frames[1], (b, j) => (j === frames[1].length - 5 ? b ^ 0xff : b))
      yield* Effect.promise(() => js.publish(Queues.names("wire").dataSubject(task.messageId, 1), bad))
      const error = yield* Effect.flip(q.batch(task, Batch.Prompts))
      expect(error.message).toContain(`message ${task.messageId}: frame 2/`)
      yield* q.drop(task.messageId)
      const gone = yield* Effect.flip(q.batch(task, Batch.Prompts))
      expect(gone.message).toContain("missing")
    })))
})
