/** Test fixtures: a real nats-server per test (127.0.0.1, random port, temp store), batches, a fake draw. */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Batch, Columns } from "@r1flow/core"
import type { RecordBatch } from "apache-arrow"
import { Effect, type Scope } from "effect"
import { describe } from "vitest"
import * as NatsServer from "../src/NatsServer.js"

/** The nats-server binary, or undefined (the suites then skip, saying why). */
export const binary = NatsServer.locate()
if (binary === undefined) console.warn("@r1flow/distributed: nats-server not found on PATH or in /usr/sbin; the NATS tests are skipped (apt-get install nats-server)")

/** `describe` when nats-server is installed, else a skipped suite. */
export const describeNats: typeof describe = (binary === undefined ? describe.skip : describe) as typeof describe

/** Runs a scoped test program. */
export const run = <A, E>(self: Effect.Effect<A, E, Scope.Scope>): Promise<A> => Effect.runPromise(Effect.scoped(self))

/** A temp store directory, removed when the scope closes. */
export const tempDir: Effect.Effect<string, never, Scope.Scope> = Effect.acquireRelease(
  Effect.sync(() => mkdtempSync(join(tmpdir(), "r1flow-nats-"))),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)

/** A nats-server on a temp store. */
export const server = (options: Partial<NatsServer.Options> = {}) =>
  Effect.flatMap(tempDir, (storeDir) => NatsServer.start({ storeDir, ...options }))

const lcg = (seed: number) => {
  let s = seed >>> 0
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    return s
  }
}

/** A prompts batch of one group: `rows` prompts of `promptLength` tokens each. */
export const prompts = (groupId: number, rows = 2, promptLength = 8): RecordBatch<Batch.PromptsType> => {
  const next = lcg(groupId + 1)
  const ids = Array.from({ length: rows }, () => Array.from({ length: promptLength }, () => next() % 50_000))
  return Batch.fromData(Batch.Prompts, {
    id: Columns.makeUtf8(ids.map((_, i) => `p${groupId}-${i}`)),
    group_id: Columns.makeInt32(new Int32Array(rows).fill(groupId)),
    prompt: Columns.makeUtf8(ids.map((_, i) => `question ${groupId}.${i}`)),
    prompt_ids: Columns.int32ListFromRows(ids),
    answer: Columns.makeUtf8(ids.map(() => "42")),
    metadata: Columns.makeUtf8(ids.map(() => "{}"))
  })
}

/**
 * A deterministic stand-in for generation and scoring: completions and rewards are functions of the
 * prompts, the group's seed and the policy version only, so any worker produces the same result.
 */
export const fakeDraw = (p: RecordBatch<Batch.PromptsType>, meta: { readonly policyVersion: number; readonly seed: number; readonly groupId: number }): RecordBatch<Batch.ScoredType> => {
  const next = lcg(meta.seed ^ (meta.policyVersion * 7919))
  const n = p.numRows
  const completions = Array.from({ length: n }, () => Array.from({ length: 4 }, () => next() % 50_000))
  const str = (name: string) => p.getChild(name)!.toArray() as Array<string>
  return Batch.fromData(Batch.Scored, {
    id: Columns.makeUtf8(str("id")),
    group_id: p.getChild("group_id")!.data[0],
    prompt: Columns.makeUtf8(str("prompt")),
    prompt_ids: p.getChild("prompt_ids")!.data[0],
    answer: Columns.makeUtf8(str("answer")),
    metadata: Columns.makeUtf8(str("metadata")),
    completion: Columns.makeUtf8(completions.map((c) => c.join(" "))),
    completion_ids: Columns.int32ListFromRows(completions),
    logprobs: Columns.float32ListFromRows(completions.map((c) => c.map((t) => -(t % 97) / 10))),
    finish_reason: Columns.makeUtf8(completions.map(() => "stop")),
    prompt_length: Columns.makeInt32(new Int32Array(n).fill(p.getChild("prompt_ids")!.get(0)!.length)),
    completion_length: Columns.makeInt32(new Int32Array(n).fill(4)),
    reward: Columns.makeFloat32(Float32Array.from(completions, (c) => (c[0] % 2) + meta.policyVersion))
  })
}
