/**
 * A worker in its own process, for the kill -9 test: env R1FLOW_TEST_URL, R1FLOW_TEST_WORKER, R1FLOW_TEST_DRAW_MS.
 * Prints `start g<id>` when a draw begins and `done g<id>` once the group is acked.
 */
import { Effect } from "effect"
import * as Connection from "../src/Connection.js"
import * as Worker from "../src/Worker.js"
import { fakeDraw } from "./fixtures-data.js"

const env = (k: string) => process.env[k] ?? ""
const workerId = env("R1FLOW_TEST_WORKER")
const program = Effect.scoped(Effect.flatMap(Connection.open({ url: env("R1FLOW_TEST_URL"), name: workerId }), (nc) =>
  Worker.run(nc, {
    runId: "r", workerId, fingerprint: "f", ackWaitMs: 1500,
    draw: (p, meta) => Effect.andThen(Effect.sync(() => process.stdout.write(`start g${meta.groupId}\n`)), Effect.as(Effect.sleep(Number(env("R1FLOW_TEST_DRAW_MS"))), fakeDraw(p, meta))),
    load: () => Effect.void,
    onGroup: (t) => process.stdout.write(`done g${t.groupId}\n`)
  })))
Effect.runPromise(program).catch((e: unknown) => {
  process.stderr.write(`${String(e)}\n`)
  process.exit(1)
})
