/** Test fixtures: a real nats-server per test (127.0.0.1, random port, temp store), batches, a fake draw. */
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
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

export { fakeDraw, prompts } from "./fixtures-data.js"
