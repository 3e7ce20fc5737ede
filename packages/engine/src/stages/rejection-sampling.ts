/**
 * `rejection-sampling`: R1's third stage. Sample k completions per training prompt (drawn as grpo draws
 * them: by the tasks' weights in a mixture) from the current policy, keep those R1's filters accept
 * (`RejectionFilters`, in its fixed order: finished, correct by the rule rewards or, for rows with no
 * rule answer, by the `judge`; language-consistent; no long paragraphs; no code blocks outside code
 * tasks; not a duplicate; within `maxPerPrompt`), then mix in direct-answer rows (`directShare`), and
 * write the SFT set (`sft/<label>.arrow`: prompt, completion, prompt_ids, completion_ids, kind) and what
 * happened (`sft/<label>.json`: per-filter counts, the rule rewards the `incorrect` ones failed, config)
 * for a later `sft` stage.
 *
 * Direct rows: n_direct = round(directShare · kept / (1 − directShare)), capped at the train rows with a
 * reference answer, drawn from them by a seeded permutation; each is the training prompt with
 * `RejectionFilters.directCompletion` (the reasoning skipped, the reference answer verbatim). That is a
 * correct answer only where the task's reference answer is what the answer block must hold (arithmetic,
 * GSM8K); countdown's is the target, not an equation, so leave its rows out with `directTasks`.
 */
import { Batch, Columns, Config as CoreConfig, Metrics, RewardStage } from "@r1flow/core"
import type { Task } from "@r1flow/datasets"
import { Sft } from "@r1flow/grpo"
import { Template } from "@r1flow/tokenizer"
import { Field, Schema as ArrowSchema, Utf8, type Float32, type RecordBatch, type Vector, type Utf8 as Utf8T } from "apache-arrow"
import { Effect, Schema } from "effect"
import { mkdirSync } from "node:fs"
import { join } from "node:path"
import { Run, StageRunError, type RunContext } from "../Context.js"
import * as Prompts from "../Prompts.js"
import * as RecipeStage from "../RecipeStage.js"
import * as RejectionFilters from "../RejectionFilters.js"
import * as RunDir from "../RunDir.js"
import * as Sampling from "../Sampling.js"
import * as RewardModelStage from "./reward-model.js"

/** The language-consistency plugin: its entry is the `mixed_language` filter unless `languageReward` names another. */
export const LANGUAGE_PLUGIN = "@r1flow/reward-language-consistency"
/** The judge's reward column name unless its entry names one. */
export const JUDGE_NAME = "judge"
/** Threshold of the language reward when `thresholds` has none (R1 keeps chains that are consistently one language). */
export const DEFAULT_LANGUAGE_THRESHOLD = 0.9

/** Rejection-sampling config. */
export const Config = Schema.Struct({
  /** Training prompts to sample from. */
  prompts: Schema.Int.check(Schema.isGreaterThan(0)),
  /** k completions per prompt. */
  samples: Schema.Int.check(Schema.isGreaterThan(0)),
  sampling: Sampling.Config,
  /** Rewards a completion must pass: score ≥ `thresholds[name]` (default 1; the language reward's 0.9). Each entry's own `config` is its plugin's, decoded in `check`. */
  rewards: Schema.Array(RewardStage.Entry).check(Schema.isMinLength(1)),
  thresholds: Schema.optionalKey(Schema.Record(Schema.String, Schema.Finite)),
  /** Keep only completions that ended by themselves (finish reason `stop`), as R1 does; false also keeps cut ones. */
  requireStop: Schema.Boolean.pipe(Schema.withDecodingDefaultKey(Effect.succeed(true))),
  /** Keep at most this many accepted completions per prompt (all `samples` are still drawn and counted). */
  maxPerPrompt: Schema.Int.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(1))),
  batchSize: Schema.Int.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(32))),
  /** The judge of rows with no reference answer (e.g. `{ "plugin": "@r1flow/reward-model", … }`); its column is `reward_judge` unless named. */
  judge: Schema.optionalKey(RewardStage.Entry),
  /** The judge's score a completion must reach (default 0: a reward model's logit above even). */
  judgeThreshold: Schema.Finite.pipe(Schema.withDecodingDefaultKey(Effect.succeed(0))),
  /** The reward (by name) counted as the `mixed_language` filter (default: the `@r1flow/reward-language-consistency` entry, if any). */
  languageReward: Schema.optionalKey(Schema.String),
  /** Longest line, in code points, a kept completion may hold (R1 drops chains with long paragraphs). */
  maxParagraphChars: Schema.Int.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(600))),
  /** Share of the written set that is direct-answer rows (no reasoning), in [0, 1); default 0. */
  directShare: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0), Schema.isLessThan(1)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(0))),
  /** Tasks (`metadata.task`) whose train rows may give direct rows (default: every row with a reference answer). */
  directTasks: Schema.optionalKey(Schema.Array(Schema.String))
})
/** Rejection-sampling config. */
export type Config = typeof Config.Type

/** Schema of the SFT sets this stage writes; `kind` is "reasoning" (sampled, filtered) or "direct" (the answer without reasoning). */
export const SftSet = new ArrowSchema([
  new Field("prompt", new Utf8(), false),
  new Field("completion", new Utf8(), false),
  ...Sft.Input.fields,
  new Field("kind", new Utf8(), false)
], new Map([["r1flow.schema", "sft-set"], ["r1flow.schema_version", Batch.SCHEMA_VERSION]]))

/** Where a rejection-sampling stage labelled `label` writes its set. */
export const pathOf = (root: string, label: string) => join(root, "sft", `${label}.arrow`)
/** Where it writes the set's counts and config. */
export const reportPathOf = (root: string, label: string) => join(root, "sft", `${label}.json`)

/** The reward list the stage loads: `rewards`, then the judge (named) when there is one. */
export const rewardList = (config: Config): Array<RewardStage.Entry> =>
  config.judge === undefined ? [...config.rewards] : [...config.rewards, { ...config.judge, name: config.judge.name ?? JUDGE_NAME }]

/** Which reward column plays which part: the judge is the last when configured, the language one by name or plugin, the rest are rules. */
export const rolesOf = (config: Config, names: ReadonlyArray<string>): { rule: Array<number>; judge: number | undefined; language: number | undefined } => {
  const judge = config.judge === undefined ? undefined : names.length - 1
  const at = config.languageReward !== undefined ? names.indexOf(config.languageReward) : config.rewards.findIndex((e) => e.plugin === LANGUAGE_PLUGIN)
  const language = at >= 0 ? at : undefined
  return { rule: names.map((_, i) => i).filter((i) => i !== judge && i !== language), judge, language }
}

/** The threshold of reward `name`. */
const thresholdOf = (config: Config, name: string, isLanguage: boolean) => config.thresholds?.[name] ?? (isLanguage ? DEFAULT_LANGUAGE_THRESHOLD : 1)

/** One scored chunk's samples as the filters see them, grouped by prompt (`[prompts][samples]`). */
const samplesOf = (config: Config, chunk: ReadonlyArray<Task.Row>, scored: RecordBatch, names: ReadonlyArray<string>): Array<Array<RejectionFilters.Sample>> => {
  const roles = rolesOf(config, names)
  const scores = names.map((n) => Columns.float32Values(scored.getChild(Batch.rewardColumn(n)) as Vector<Float32>))
  const at = (k: number, i: number, threshold: number): RejectionFilters.Scored => ({ score: scores[k][i], threshold })
  const completions = Array.from(scored.getChild("completion") as Vector<Utf8T>, (s) => s ?? "")
  const finish = Array.from(scored.getChild("finish_reason") as Vector<Utf8T>, (s) => s ?? "")
  return chunk.map((row, p) =>
    Array.from({ length: config.samples }, (_, s) => {
      const i = p * config.samples + s
      return {
        completion: completions[i],
        finishReason: finish[i],
        hasAnswer: row.answer.trim() !== "",
        isCode: row.metadata.tests !== undefined,
        rule: roles.rule.map((k) => at(k, i, thresholdOf(config, names[k], false))),
        judge: roles.judge === undefined ? undefined : at(roles.judge, i, config.judgeThreshold),
        language: roles.language === undefined ? undefined : at(roles.language, i, thresholdOf(config, names[roles.language], true))
      }
    }))
}

/** An SFT set being built, one entry per row (`SftSet`'s columns). */
export interface SetRows {
  readonly prompt: Array<string>
  readonly completion: Array<string>
  readonly promptIds: Array<Int32Array>
  readonly completionIds: Array<Int32Array>
  readonly kind: Array<"reasoning" | "direct">
}

/**
 * Samples one chunk of prompts, filters it, adds the survivors to `set` and, per rule reward, the
 * `incorrect` samples that failed it to `incorrectBy`; returns the chunk's counts and the template's
 * completion prefix.
 */
const sampleChunk = (ctx: RunContext, label: string, config: Config, rewardStage: RewardStage.RewardStage, chunk: ReadonlyArray<Task.Row>, start: number, set: SetRows, incorrectBy: Record<string, number>) =>
  Effect.gen(function*() {
    const rollouts = yield* Sampling.rollouts(ctx, chunk, config.sampling, { groupSize: config.samples, stream: `${label}/rollout`, firstGroup: start, stage: label })
    const scored = yield* Sampling.score(label, rewardStage, rollouts)
    const pIds = Columns.int32List(scored.getChild("prompt_ids")!)
    const cIds = Columns.int32List(scored.getChild("completion_ids")!)
    let counts = RejectionFilters.emptyCounts()
    const ruleNames = rolesOf(config, rewardStage.names).rule.map((k) => rewardStage.names[k])
    samplesOf(config, chunk, scored, rewardStage.names).forEach((samples, p) => {
      const group = RejectionFilters.selectGroup(samples, config)
      counts = RejectionFilters.addGroup(counts, group)
      group.rejectedBy.forEach((f, s) => f === "incorrect" && RejectionFilters.failedRules(samples[s]).forEach((k) => incorrectBy[ruleNames[k]]++))
      for (const s of group.kept) {
        const i = p * config.samples + s
        set.prompt.push(chunk[p].question)
        set.completion.push(samples[s].completion)
        set.promptIds.push(Columns.row(pIds, i).slice())
        set.completionIds.push(Columns.row(cIds, i).slice())
        set.kind.push("reasoning")
      }
    })
    return { counts, completionPrefix: Batch.completionPrefix(scored.schema) }
  })

/** Adds counts of two chunks. */
const sumCounts = (a: RejectionFilters.Counts, b: RejectionFilters.Counts): RejectionFilters.Counts => ({
  sampled: a.sampled + b.sampled,
  kept: a.kept + b.kept,
  rejected: Object.fromEntries(RejectionFilters.FILTERS.map((f) => [f, a.rejected[f] + b.rejected[f]])) as Record<RejectionFilters.Filter, number>
})

/** The train rows direct rows may come from: a reference answer, and a listed task when `directTasks` is set. */
export const directCandidates = (train: ReadonlyArray<Task.Row>, directTasks: ReadonlyArray<string> | undefined): Array<Task.Row> =>
  train.filter((r) => r.answer.trim() !== "" && (directTasks === undefined || directTasks.includes(String(r.metadata.task))))

/** Adds `count` direct-answer rows (fewer when fewer candidates), drawn by the run's seed; returns how many. */
const addDirect = (ctx: RunContext, label: string, config: Config, count: number, completionPrefix: string, set: SetRows) =>
  Effect.gen(function*() {
    if (count === 0) return 0
    const candidates = directCandidates(ctx.data.train, config.directTasks)
    if (candidates.length === 0) {
      return yield* new StageRunError({ stage: label, message: `directShare ${config.directShare} needs train rows with a reference answer${config.directTasks === undefined ? "" : ` in directTasks ${JSON.stringify(config.directTasks)}`}; there are none` })
    }
    // One epoch of a seeded permutation: distinct rows, the same ones for the same seed.
    const rows = Prompts.sampler(candidates, ctx.recipe.seed, `${label}/direct`)(0, Math.min(count, candidates.length))
    for (const row of rows) {
      const text = RejectionFilters.directCompletion(completionPrefix, row.answer)
      set.prompt.push(row.question)
      set.completion.push(text)
      set.promptIds.push(ctx.promptIds(row.question))
      set.completionIds.push(Template.completion(ctx.tokenizer, text))
      set.kind.push("direct")
    }
    return rows.length
  })

/** What the stage found, for its report: the counts, and per rule reward the `incorrect` samples it failed (one may fail several). */
interface Outcome {
  readonly counts: RejectionFilters.Counts
  readonly incorrectBy: Readonly<Record<string, number>>
  readonly direct: number
}

const toStageError = (label: string) => (e: RunDir.RunDirError) => new StageRunError({ stage: label, message: `${e.path}: ${e.message}` })

/** Writes an SFT set to `sft/<label>.arrow` (`pathOf`) and returns the path: this stage's, and the `sft` stage's cold-start set. */
export const writeSftSet = (root: string, label: string, set: SetRows): Effect.Effect<string, StageRunError> =>
  Effect.gen(function*() {
    const batch = Batch.fromData(SftSet, {
      prompt: Columns.makeUtf8(set.prompt),
      completion: Columns.makeUtf8(set.completion),
      prompt_ids: Columns.int32ListFromRows(set.promptIds),
      completion_ids: Columns.int32ListFromRows(set.completionIds),
      kind: Columns.makeUtf8(set.kind)
    })
    const path = pathOf(root, label)
    yield* Effect.sync(() => mkdirSync(join(root, "sft"), { recursive: true }))
    yield* RunDir.write(path, yield* Effect.sync(() => RunDir.ipcFile(batch))).pipe(Effect.mapError(toStageError(label)))
    return path
  })

/** Writes the set and its report (counts, rates, config) next to it. */
const writeSet = (ctx: RunContext, label: string, config: Config, set: SetRows, { counts, incorrectBy, direct }: Outcome) =>
  Effect.gen(function*() {
    const path = yield* writeSftSet(ctx.dir.root, label, set)
    const report = { label, filters: RejectionFilters.FILTERS, ...counts, incorrectBy, direct, metrics: RejectionFilters.metrics(label, counts, direct), config }
    yield* RunDir.write(reportPathOf(ctx.dir.root, label), `${JSON.stringify(report, null, 2)}\n`).pipe(Effect.mapError(toStageError(label)))
    return path
  })

/** Before the run: the rewards and the judge load and decode, route to the recipe's tasks, and `languageReward` names one of them. */
const check = (config: Config, at: RecipeStage.CheckContext) =>
  Effect.gen(function*() {
    const names = yield* Sampling.checkRewardNames(rewardList(config), at.where, at.from)
    yield* Sampling.checkTaskNames([
      ...config.rewards.map((e, k) => ({ path: `${at.where}.rewards[${k}].tasks`, names: e.tasks })),
      { path: `${at.where}.judge.tasks`, names: config.judge?.tasks },
      { path: `${at.where}.directTasks`, names: config.directTasks }
    ], at.tasks)
    yield* RewardModelStage.checkStageRefs(config.rewards, (k) => `${at.where}.rewards[${k}]`, at)
    yield* RewardModelStage.checkStageRefs([config.judge], () => `${at.where}.judge`, at)
    if (config.languageReward !== undefined && !names.slice(0, config.rewards.length).includes(config.languageReward)) {
      return yield* new CoreConfig.ConfigError({
        source: "recipe",
        problems: [`${at.where}.languageReward: no reward named "${config.languageReward}" (rewards: ${names.slice(0, config.rewards.length).join(", ")})`]
      })
    }
  })

const plugin: RecipeStage.StagePlugin<typeof Config.Type> = RecipeStage.define({
  name: "rejection-sampling",
  version: "0.2.0",
  description: "sample k per prompt, keep what R1's filters accept (counted per filter), mix in direct answers, write an SFT set",
  config: Config,
  make: (config) => ({
    kind: "rejection-sampling",
    check: (at) => check(config, at),
    run: (label) =>
      Effect.scoped(
        Effect.gen(function*() {
          const ctx = yield* Run
          const rewardStage = yield* Sampling.loadRewards(label, rewardList(config))
          // A mixture's prompts by the tasks' weights, as grpo draws them; a single task exactly as before.
          const rows = Prompts.taskSampler(ctx.recipe.task, ctx.data.train, ctx.recipe.seed, `${label}/data`)(0, config.prompts)
          const set: SetRows = { prompt: [], completion: [], promptIds: [], completionIds: [], kind: [] }
          let counts = RejectionFilters.emptyCounts()
          const incorrectBy: Record<string, number> = Object.fromEntries(rolesOf(config, rewardStage.names).rule.map((k) => [rewardStage.names[k], 0]))
          let completionPrefix = ""
          for (let start = 0; start < rows.length; start += config.batchSize) {
            const chunk = yield* sampleChunk(ctx, label, config, rewardStage, rows.slice(start, start + config.batchSize), start, set, incorrectBy)
            counts = sumCounts(counts, chunk.counts)
            completionPrefix = chunk.completionPrefix
          }
          if (counts.kept === 0) {
            return yield* new StageRunError({ stage: label, message: `no completion passed the filters (${RejectionFilters.summary(counts, 0)}); nothing to write` })
          }
          const direct = yield* addDirect(ctx, label, config, RejectionFilters.directCount(counts.kept, config.directShare), completionPrefix, set)
          const path = yield* writeSet(ctx, label, config, set, { counts, incorrectBy, direct })
          yield* (yield* Metrics.Metrics).record(ctx.progress.step, RejectionFilters.metrics(label, counts, direct))
          ctx.log(`[${label}] ${RejectionFilters.summary(counts, direct)} → ${path}`)
        })
      )
  })
})

export default plugin
