/**
 * The process a run's local rollout worker runs (`Distributed.startLocalWorkers`): one JSON argument
 * (`Distributed.LocalWorkerArgs`), the run's recorded recipe, until SIGTERM. Exits 1 with the message on failure.
 */
import { Effect } from "effect"
import type * as Distributed from "./Distributed.js"
import * as RolloutWorker from "./RolloutWorker.js"

const args = JSON.parse(process.argv[2] ?? "{}") as Distributed.LocalWorkerArgs
process.once("SIGTERM", () => process.exit(0))
// A local worker belongs to the trainer that started it. A trainer killed with SIGKILL runs no finalizer to
// stop it, and an orphan would keep pulling the run's queues (against the resumed trainer's server, with
// the killed trainer's weights), so it leaves once its parent is gone (it is re-parented).
const parent = process.ppid
setInterval(() => {
  if (process.ppid !== parent) process.exit(0)
}, 500).unref()
Effect.runPromise(RolloutWorker.run({ nats: args.nats, recipe: args.runDir, stage: args.stage, workerId: args.workerId })).catch((e: unknown) => {
  process.stderr.write(`r1flow worker ${args.workerId}: ${(e as { message?: string }).message ?? String(e)}\n`)
  process.exit(1)
})
