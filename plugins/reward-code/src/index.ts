/**
 * @r1flow/reward-code: scores code answers by running the last fenced code block against the row's
 * test cases in a bubblewrap sandbox (see `CodeReward` for the scores, `Cases` for the metadata
 * format, `Sandbox` for the isolation).
 */
import { Reward } from "@r1flow/core"
import * as CodeReward from "./CodeReward.js"

export * as Cases from "./Cases.js"
export * as CodeReward from "./CodeReward.js"
export * as Extract from "./Extract.js"
export * as Pool from "./Pool.js"
export * as Sandbox from "./Sandbox.js"

/** The plugin: `{ "plugin": "@r1flow/reward-code", "config": { "scoring": "fraction" } }`. */
export default Reward.define({
  name: CodeReward.NAME,
  version: CodeReward.VERSION,
  description: "Fraction of the row's test cases (stdin/stdout pairs or assertions) the answer's last code block passes, run in a bubblewrap sandbox; NaN on sandbox failures",
  config: CodeReward.Config,
  make: (config) => CodeReward.make(config)
})
