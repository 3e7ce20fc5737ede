/**
 * `eval`: held-out pass@1 (averaged over k samples), cons@k, format rate and mean length of the
 * current policy. See `Evaluate`.
 */
import { Effect } from "effect"
import * as Evaluate from "../Evaluate.js"
import * as RecipeStage from "../RecipeStage.js"
import * as Sampling from "../Sampling.js"

const plugin: RecipeStage.StagePlugin<typeof Evaluate.Config.Type> = RecipeStage.define({
  name: "eval",
  version: "0.1.0",
  description: "held-out evaluation: pass@1 over k samples, cons@k, format rate, mean completion length",
  config: Evaluate.Config,
  make: (config) => ({
    kind: "eval",
    check: ({ where, from }) => Sampling.checkAccuracy(config.accuracy, where, from),
    run: (label) => Effect.asVoid(Evaluate.run(config, label))
  })
})

export default plugin
