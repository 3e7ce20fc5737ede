/**
 * `student`: starts a fresh policy of another shape (distillation's student). The current policy
 * (the teacher) is saved to `checkpoints/<label>-teacher/` first, so nothing trained is lost.
 */
import { Rng } from "@r1flow/core"
import { Checkpoint, Transformer } from "@r1flow/model"
import { Effect, Schema } from "effect"
import { join } from "node:path"
import { Run, StageRunError } from "../Context.js"
import * as RecipeStage from "../RecipeStage.js"
import * as Recipe from "../Recipe.js"

/** Student config: the new policy's shape. */
export const Config = Schema.Struct({ model: Recipe.Model })

const plugin: RecipeStage.StagePlugin<typeof Config.Type> = RecipeStage.define({
  name: "student",
  version: "0.1.0",
  description: "replace the policy with a freshly initialised student (the teacher is checkpointed)",
  config: Config,
  make: (config) => ({
    kind: "student",
    run: (label) =>
      Effect.gen(function*() {
        const ctx = yield* Run
        if (ctx.progress.stageStep > 0) return
        yield* Checkpoint.save(join(ctx.dir.checkpoints, `${label}-teacher`), ctx.policy).pipe(
          Effect.mapError((e) => new StageRunError({ stage: label, message: e.message }))
        )
        const rng = yield* Rng.Rng
        const teacher = ctx.policy
        ctx.policy = Transformer.init(Recipe.modelConfig(config.model, ctx.tokenizer.vocabSize), rng.stream(`${label}/init`))
        teacher.dispose()
        ctx.progress.stageStep = 1
        ctx.log(`[${label}] teacher saved; student has ${Transformer.parameterCount(ctx.policy).toLocaleString("en-US")} parameters`)
      })
  })
})

export default plugin
