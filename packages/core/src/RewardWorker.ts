/**
 * The program of a reward's worker thread: `RewardRunner.inWorker` starts its built file
 * (`dist/RewardWorker.js`); nothing imports it. It loads the plugin through the same registry as the
 * parent (`Plugin.load`, then `Plugin.instantiate` with the raw config), so the worker scores with the
 * reward the parent checked, and reads each batch with the same `Reward.inputFromBatch` as a reward
 * in the parent's thread, so both see one `Input`.
 *
 * It runs without the parent's `--conditions` (see `RewardRunner`), so this file, `@r1flow/core` and
 * plugin packages all resolve to built JavaScript, never to the TypeScript a test runner would load.
 */
import { tableFromIPC } from "apache-arrow"
import { Effect } from "effect"
import { parentPort, workerData } from "node:worker_threads"
import * as Plugin from "./Plugin.js"
import * as Reward from "./Reward.js"
import { checkShape, describeError, type Reply, type Request, type WorkerData } from "./RewardRunner.js"

/** Loads the plugin and makes its reward; fails with the message the parent reports at `load`. */
const makeReward = (data: WorkerData): Effect.Effect<Reward.Reward, Error> =>
  Plugin.load(data.spec, { kind: "reward", from: data.from }).pipe(
    Effect.flatMap((plugin) => Plugin.instantiate(plugin, data.rawConfig, data.where)),
    // The parent checked what `make` returns on its own instance of this plugin and config.
    Effect.map((reward) => reward as Reward.Reward),
    Effect.mapError((e) => new Error(e.message))
  )

/** Scores one request: decode, score, check; a throw anywhere (a missing column included) is the reward's. */
const score = async (reward: Reward.Reward, request: Request): Promise<Reply> => {
  const id = request.id
  try {
    const batch = tableFromIPC(request.ipc).batches[0]
    const outcome = checkShape(await reward.score(Reward.withSignal(Reward.inputFromBatch(batch))), batch.numRows)
    return outcome._tag === "ok" ? { type: "result", id, scores: outcome.scores } : { type: "bad", id, message: outcome.message }
  } catch (e) {
    return { type: "threw", id, message: describeError(e) }
  }
}

if (parentPort === null) throw new Error("RewardWorker.js runs as a reward's worker thread (RewardRunner.inWorker), not on its own")
const port = parentPort
const started = await Effect.runPromise(Effect.result(makeReward(workerData as WorkerData)))
if (started._tag === "Failure") {
  port.postMessage({ type: "init-error", message: started.failure.message } satisfies Reply)
} else {
  const reward = started.success
  port.on("message", (request: Request) => {
    void score(reward, request).then((reply) => port.postMessage(reply))
  })
  port.postMessage({ type: "ready" } satisfies Reply)
}
