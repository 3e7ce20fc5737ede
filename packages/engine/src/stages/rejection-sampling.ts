/**
 * `rejection-sampling`: R1's third stage. Sample k completions per training prompt from the current
 * policy, keep those every configured reward accepts (correct, well formatted, language-consistent:
 * score ≥ its threshold), drop duplicates, and write the survivors as an SFT set
 * (`sft/<label>.arrow`: prompt, completion, prompt_ids, completion_ids) for a later `sft` stage.
 */
import { Batch, Columns, Metrics, RewardStage } from "@r1flow/core"
import { Sft } from "@r1flow/grpo"
import { Field, Schema as ArrowSchema, Utf8, type Float32, type Vector, type Utf8 as Utf8T } from "apache-arrow"
import { Effect, Schema } from "effect"
import { mkdirSync } from "node:fs"
import { join } from "node:path"
import { Run, StageRunError } from "../Context.js"
import * as Prompts from "../Prompts.js"
import * as RecipeStage from "../RecipeStage.js"
import * as RunDir from "../RunDir.js"
import * as Sampling from "../Sampling.js"

/** Rejection-sampling config. */
export const Config = Schema.Struct({
  /** Training prompts to sample from. */
  prompts: Schema.Int.check(Schema.isGreaterThan(0)),
  /** k completions per prompt. */
  samples: Schema.Int.check(Schema.isGreaterThan(0)),
  sampling: Sampling.Config,
  /** Rewards a completion must pass: score ≥ `thresholds[name]` (default 1). Each entry's own `config` is its plugin's, decoded in `check`. */
  rewards: Schema.Array(RewardStage.Entry).check(Schema.isMinLength(1)),
  thresholds: Schema.optionalKey(Schema.Record(Schema.String, Schema.Finite)),
  /** Keep only completions that ended by themselves (finish reason `stop`), as R1 does; false also keeps cut ones. */
  requireStop: Schema.Boolean.pipe(Schema.withDecodingDefaultKey(Effect.succeed(true))),
  /** Keep at most this many accepted completions per prompt (all `samples` are still drawn and counted). */
  maxPerPrompt: Schema.Int.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(1))),
  batchSize: Schema.Int.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(32)))
})
/** Rejection-sampling config. */
export type Config = typeof Config.Type

/** Schema of the SFT sets this stage writes. */
export const SftSet = new ArrowSchema([
  new Field("prompt", new Utf8(), false),
  new Field("completion", new Utf8(), false),
  ...Sft.Input.fields
], new Map([["r1flow.schema", "sft-set"], ["r1flow.schema_version", Batch.SCHEMA_VERSION]]))

/** Where a rejection-sampling stage labelled `label` writes its set. */
export const pathOf = (root: string, label: string) => join(root, "sft", `${label}.arrow`)

const plugin: RecipeStage.StagePlugin<typeof Config.Type> = RecipeStage.define({
  name: "rejection-sampling",
  version: "0.1.0",
  description: "sample k per prompt, keep correct/well-formatted/consistent completions, dedupe, write an SFT set",
  config: Config,
  make: (config) => ({
    kind: "rejection-sampling",
    check: ({ where, from }) => Sampling.checkRewards(config.rewards, where, from),
    run: (label) =>
      Effect.scoped(
        Effect.gen(function*() {
          const ctx = yield* Run
          const rewardStage = yield* Sampling.loadRewards(label, config.rewards)
          const rows = Prompts.sampler(ctx.data.train, ctx.recipe.seed, `${label}/data`)(0, config.prompts)
          const kept = { prompt: [] as Array<string>, completion: [] as Array<string>, promptIds: [] as Array<Int32Array>, completionIds: [] as Array<Int32Array> }
          let sampled = 0
          for (let start = 0; start < rows.length; start += config.batchSize) {
            const chunk = rows.slice(start, start + config.batchSize)
            const rollouts = yield* Sampling.rollouts(ctx, chunk, config.sampling, { groupSize: config.samples, stream: `${label}/rollout`, firstGroup: start, stage: label })
            const scored = yield* Sampling.score(label, rewardStage, rollouts)
            const scores = rewardStage.names.map((n) => ({ n, v: Columns.float32Values(scored.getChild(Batch.rewardColumn(n)) as Vector<Float32>) }))
            const completions = Array.from(scored.getChild("completion") as Vector<Utf8T>, (s) => s ?? "")
            const finish = Array.from(scored.getChild("finish_reason") as Vector<Utf8T>, (s) => s ?? "")
            const pIds = Columns.int32List(scored.getChild("prompt_ids")!)
            const cIds = Columns.int32List(scored.getChild("completion_ids")!)
            // Every completion drawn counts, also those after a prompt's maxPerPrompt were kept: the accept rate is over all of them.
            sampled += scored.numRows
            for (let p = 0; p < chunk.length; p++) {
              const seen = new Set<string>()
              for (let s = 0; s < config.samples && seen.size < config.maxPerPrompt; s++) {
                const i = p * config.samples + s
                if (config.requireStop && finish[i] !== "stop") continue
                if (!scores.every(({ n, v }) => v[i] >= (config.thresholds?.[n] ?? 1))) continue
                const text = completions[i].trim()
                if (seen.has(text)) continue
                seen.add(text)
                kept.prompt.push(chunk[p].question)
                kept.completion.push(completions[i])
                kept.promptIds.push(Columns.row(pIds, i).slice())
                kept.completionIds.push(Columns.row(cIds, i).slice())
              }
            }
          }
          if (kept.prompt.length === 0) {
            return yield* new StageRunError({ stage: label, message: `no completion passed the filters (${sampled} sampled); nothing to write` })
          }
          const set = Batch.fromData(SftSet, {
            prompt: Columns.makeUtf8(kept.prompt),
            completion: Columns.makeUtf8(kept.completion),
            prompt_ids: Columns.int32ListFromRows(kept.promptIds),
            completion_ids: Columns.int32ListFromRows(kept.completionIds)
          })
          mkdirSync(join(ctx.dir.root, "sft"), { recursive: true })
          const path = pathOf(ctx.dir.root, label)
          yield* RunDir.write(path, (yield* Effect.sync(() => RunDir.ipcFile(set)))).pipe(Effect.mapError((e) => new StageRunError({ stage: label, message: `${e.path}: ${e.message}` })))
          yield* (yield* Metrics.Metrics).record(ctx.progress.step, { [`${label}/kept`]: kept.prompt.length, [`${label}/sampled`]: sampled, [`${label}/accept_rate`]: kept.prompt.length / sampled })
          ctx.log(`[${label}] kept ${kept.prompt.length} of ${sampled} sampled completions (${(100 * kept.prompt.length / sampled).toFixed(1)} %) → ${path}`)
        })
      )
  })
})

export default plugin
