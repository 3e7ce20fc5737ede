/**
 * @r1flow/reward-http: scores batches on a user-run HTTP scoring server (Arrow IPC stream in, a
 * `score` column out, with per-attempt timeout and retries). See `HttpReward` for the protocol.
 */
import { Reward } from "@r1flow/core"
import * as HttpReward from "./HttpReward.js"

export * as HttpReward from "./HttpReward.js"

/** The plugin: `{ "plugin": "@r1flow/reward-http", "config": { "url": "http://127.0.0.1:8000/score" } }`. */
export default Reward.define({
  name: HttpReward.NAME,
  version: HttpReward.VERSION,
  description: "Scores each batch on a user-run HTTP server: POSTs the rollouts as an Arrow IPC stream, reads back a Float32 `score` column (timeout, retries with backoff)",
  config: HttpReward.Config,
  make: (config) => HttpReward.make(config)
})
