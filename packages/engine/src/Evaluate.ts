/**
 * Held-out evaluation as R1 reports it: pass@1 averaged over k samples per problem, and cons@k
 * (majority vote over the k final answers, equal by the task's own equivalence: `voteKey`). Also the
 * format rate (strict R1 format), the mean completion length and the mean language consistency (the
 * language-consistency reward's default: English, trigram identification; over the completions whose
 * chain of thought has words, absent when none has: a bare `3+4=7` is in no language). Results go to `evals/<label>.json` (or
 * where the caller's `save` puts them), the metrics stream, and the terminal.
 *
 * Over a mixture, each problem is judged by its own task's default accuracy reward (one reward per plugin,
 * routed to its tasks with `RewardStage.Entry.tasks`, unless the config names one `accuracy` for all) and
 * votes by its own task's `voteKey`; the record gains `tasks`, the same rates over each task's problems
 * (`eval/<label>/<task>/…` in the metrics), and the printed line lists each task.
 */
import { Batch, Columns, MathAnswer, Metrics, RewardStage } from "@r1flow/core"
import { Countdown, type Task } from "@r1flow/datasets"
import { Effect, Schema } from "effect"
import type { Float32, Int32, RecordBatch, Utf8, Vector } from "apache-arrow"
import { Run, StageRunError, type RunContext, type Services } from "./Context.js"
import * as Recipe from "./Recipe.js"
import type { EvalRecord, TaskEval } from "./Report.js"
import * as RunDir from "./RunDir.js"
import * as Sampling from "./Sampling.js"
import { join } from "node:path"

/** Eval config. */
export const Config = Schema.Struct({
  split: Schema.Literals(["test", "train"]).pipe(Schema.withDecodingDefaultKey(Effect.succeed("test" as const))),
  /** Evaluate on the first `limit` problems (default: all). */
  limit: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThan(0))),
  /** k samples per problem. */
  samples: Schema.Int.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(1))),
  sampling: Sampling.Config,
  /**
   * Reward plugin that judges correctness (score ≥ 1 is correct); default by task. Its `config` is the
   * plugin's own, opaque here by design: the plugin's schema decodes it in the stage's `check`, before the run.
   */
  accuracy: Schema.optionalKey(Schema.Struct({ plugin: Schema.String, config: Schema.optionalKey(Schema.Unknown) })),
  /** Problems per generation batch. */
  batchSize: Schema.Int.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(64)))
})
/** Eval config. */
export type Config = typeof Config.Type

/** A completion's vote: completions with one key give the same answer; null when it gives none. */
export type VoteKey = (completion: string) => string | null

const canonicalNumber = (x: number) => String(Number(x.toPrecision(12)) + 0)

/** Countdown: the `<answer>` equation's numbers and value (`Countdown.evaluate`, the task's own parser). */
const countdownKey: VoteKey = (completion) => {
  const block = MathAnswer.answerBlock(completion)
  const e = block === null ? undefined : Countdown.evaluate(block.trim())
  if (e === undefined || !Number.isFinite(e.value)) return null
  return `${[...e.numbers].sort((a, b) => a - b).join(",")}=${canonicalNumber(e.value)}`
}

/**
 * Math: `MathAnswer.key` of the final answer the accuracy reward reads (`<answer>`, `\boxed`, `####`),
 * or of the whole completion when it is nothing but a number (`42`).
 */
const mathKey: VoteKey = (completion) => {
  const answer = MathAnswer.extract(completion) ?? (MathAnswer.parseNumber(completion.trim()) !== null ? completion.trim() : null)
  return answer === null ? null : MathAnswer.key(answer)
}

/** The vote key of a task kind, by that task's own notion of "the same answer". */
export const voteKey = (task: Recipe.Task["kind"]): VoteKey => (task === "countdown" ? countdownKey : mathKey)

/**
 * cons@k of one problem's k completions: the answer given most often (ties: the one given first) decides,
 * and it is correct when a completion giving it was judged correct. Completions without an answer do not
 * vote, so they can never win; with no vote at all the problem counts as wrong.
 */
export const consensus = (completions: ReadonlyArray<string>, correct: ReadonlyArray<boolean>, key: VoteKey): boolean => {
  const votes = new Map<string, { count: number; correct: boolean }>()
  completions.forEach((completion, i) => {
    const k = key(completion)
    if (k === null) return
    const v = votes.get(k) ?? { count: 0, correct: false }
    v.count++
    v.correct ||= correct[i]
    votes.set(k, v)
  })
  let best = { count: 0, correct: false }
  for (const v of votes.values()) if (v.count > best.count) best = v
  return best.correct
}

const strings = (v: Vector<Utf8>) => Array.from(v as Iterable<string | null>, (s) => s ?? "")

/** Counts over the evaluated completions (and problems, for cons@k), and the first 12 samples for the report. */
interface Tally {
  correct: number
  formatted: number
  length: number
  n: number
  /** Sum and count of the language-consistency scores that are not NaN. */
  language: number
  languageN: number
  consCorrect: number
  problems: number
  readonly samples: Array<EvalRecord["samples"][number]>
}

const emptyTally = (): Tally => ({ correct: 0, formatted: 0, length: 0, n: 0, language: 0, languageN: 0, consCorrect: 0, problems: 0, samples: [] })

/** How a chunk's problems are judged: the accuracy columns (one per routed judge), each problem's task and vote key. */
interface Judging {
  readonly accuracyColumns: ReadonlyArray<string>
  readonly taskOf: (row: Task.Row) => string
  readonly keyOf: (task: string) => VoteKey
}

/** Each row's accuracy: the one judge that scored it (routed judges leave NaN on the others' rows). */
const accuracyValues = (scored: RecordBatch, columns: ReadonlyArray<string>): Float32Array => {
  const all = columns.map((c) => Columns.float32Values(scored.getChild(Batch.rewardColumn(c)) as Vector<Float32>))
  if (all.length === 1) return all[0]
  return Float32Array.from({ length: scored.numRows }, (_, i) => all.find((a) => a[i] === a[i])?.[i] ?? NaN)
}

/**
 * Adds one scored chunk (`chunk`'s problems × k samples each, in order) to the tally of all problems and,
 * with `perTask`, to the tally of each problem's task.
 */
const addChunk = (t: Tally, perTask: Map<string, Tally> | null, scored: RecordBatch, chunk: ReadonlyArray<Task.Row>, k: number, judging: Judging) => {
  const acc = accuracyValues(scored, judging.accuracyColumns)
  const fmt = Columns.float32Values(scored.getChild(Batch.rewardColumn("format")) as Vector<Float32>)
  const lang = Columns.float32Values(scored.getChild(Batch.rewardColumn("language")) as Vector<Float32>)
  const lens = Columns.int32Values(scored.getChild("completion_length") as Vector<Int32>)
  const completions = strings(scored.getChild("completion") as Vector<Utf8>)
  for (let p = 0; p < chunk.length; p++) {
    const task = judging.taskOf(chunk[p])
    if (perTask !== null && !perTask.has(task)) perTask.set(task, emptyTally())
    const tallies = perTask === null ? [t] : [t, perTask.get(task)!]
    const at = p * k
    const judged = Array.from(acc.subarray(at, at + k), (a) => a >= 1)
    const cons = consensus(completions.slice(at, at + k), judged, judging.keyOf(task)) ? 1 : 0
    for (const u of tallies) {
      for (let i = at; i < at + k; i++) {
        u.correct += acc[i] >= 1 ? 1 : 0
        u.formatted += fmt[i] >= 1 ? 1 : 0
        u.length += lens[i]
        u.n++
        if (!Number.isNaN(lang[i])) {
          u.language += lang[i]
          u.languageN++
        }
      }
      u.consCorrect += cons
      u.problems++
    }
    if (t.samples.length < 12) t.samples.push({ prompt: chunk[p].question, completion: completions[at], answer: chunk[p].answer, reward: acc[at] })
  }
}

/** A tally's rates (0 over no completions). */
const rates = (t: Tally): TaskEval => ({
  problems: t.problems,
  accuracy: t.n > 0 ? t.correct / t.n : 0,
  consAccuracy: t.problems > 0 ? t.consCorrect / t.problems : 0,
  formatRate: t.n > 0 ? t.formatted / t.n : 0,
  meanLength: t.n > 0 ? t.length / t.n : 0,
  ...(t.languageN > 0 ? { languageConsistency: t.language / t.languageN } : {})
})

/** The language consistency in a printed line, when there is one. */
const languagePart = (x: number | undefined) => (x === undefined ? "" : `, language ${(100 * x).toFixed(1)} %`)

/** The per-task part of the line: each task's pass@1 (and cons@k), over its problems. */
const taskParts = (k: number, tasks: Readonly<Record<string, TaskEval>> | undefined) =>
  Object.entries(tasks ?? {})
    .map(([name, t]) => `   ${name}: ${(100 * t.accuracy).toFixed(1)} %${k > 1 ? ` (cons@${k} ${(100 * t.consAccuracy).toFixed(1)} %)` : ""}${languagePart(t.languageConsistency)} over ${t.problems}`)
    .join("")

/** The line an evaluation prints. */
const summaryLine = (label: string, k: number, record: EvalRecord) =>
  `[${label}] held-out accuracy (pass@1 over ${k} sample${k > 1 ? "s" : ""}): ${(100 * record.accuracy).toFixed(1)} %` +
  (k > 1 ? `   cons@${k} accuracy: ${(100 * (record.consAccuracy as number)).toFixed(1)} %` : "") +
  `   format: ${(100 * record.formatRate).toFixed(1)} %${languagePart(record.languageConsistency as number | undefined)}   mean length: ${record.meanLength.toFixed(1)} tokens   (${record.problems} problems, ${(record.seconds as number).toFixed(1)} s)` +
  taskParts(k, record.tasks)

/** Writes an evaluation's record somewhere and returns the path. */
export type Save = (ctx: RunContext, record: EvalRecord) => Effect.Effect<string, RunDir.RunDirError>

/** The run's own `evals/<label>.json`, which the report and summary read. */
export const saveInRun: Save = (ctx, record) => {
  const path = join(ctx.dir.evals, `${record.name}.json`)
  return Effect.as(RunDir.write(path, JSON.stringify(record, null, 2)), path)
}

/**
 * The rewards an evaluation scores with: the accuracy reward(s) (NaN on failure), the strict format reward
 * and the language-consistency reward (its defaults).
 * The config's `accuracy` judges every row (column `accuracy`); by default each task's own, one per plugin:
 * `accuracy` when one plugin judges every task, else `accuracy-<k>` routed to its tasks.
 */
const judges = (task: Recipe.Task, accuracy: Config["accuracy"]): Array<RewardStage.Entry> => {
  const routes = accuracy !== undefined ? [{ plugin: accuracy.plugin, tasks: null }] : Sampling.defaultAccuracies(task)
  return [
    ...routes.map((r, k): RewardStage.Entry => ({
      plugin: r.plugin,
      name: routes.length === 1 ? "accuracy" : `accuracy-${k}`,
      ...(accuracy?.config !== undefined ? { config: accuracy.config } : {}),
      ...(routes.length > 1 && r.tasks !== null ? { tasks: r.tasks as [string, ...Array<string>] } : {}),
      weight: 1,
      onError: "nan",
      timeoutMs: RewardStage.DEFAULT_TIMEOUT_MS
    })),
    { plugin: "@r1flow/reward-format", name: "format", config: { mode: "strict" }, weight: 1, onError: "nan", timeoutMs: RewardStage.DEFAULT_TIMEOUT_MS },
    { plugin: "@r1flow/reward-language-consistency", name: "language", weight: 1, onError: "nan", timeoutMs: RewardStage.DEFAULT_TIMEOUT_MS }
  ]
}

/**
 * Each problem's task and vote key. A row without a task (a standalone evaluation's own file) counts as
 * the recipe's first task, whose judge `tagged` routes it to.
 */
const judgingOf = (task: Recipe.Task, rewards: ReadonlyArray<RewardStage.Entry>): Judging & { readonly tagged: (rows: ReadonlyArray<Task.Row>) => ReadonlyArray<Task.Row> } => {
  const tasks = Recipe.tasksOf(task)
  const kinds = new Map(tasks.map((t) => [t.name, t.task.kind]))
  const first = tasks[0].name
  const taskOf = (row: Task.Row) => (typeof row.metadata.task === "string" ? row.metadata.task : first)
  return {
    accuracyColumns: rewards.filter((r) => r.name !== "format" && r.name !== "language").map((r) => r.name as string),
    taskOf,
    keyOf: (name) => voteKey(kinds.get(name) ?? tasks[0].task.kind),
    tagged: (rows) => (task.kind !== "mixture" ? rows : rows.map((r) => (typeof r.metadata.task === "string" ? r : { ...r, metadata: { ...r.metadata, task: first } })))
  }
}

/** Runs an evaluation of the current policy, records it under `label` and returns it with the file it went to. */
export const run = (config: Config, label: string, save: Save = saveInRun): Effect.Effect<EvalRecord & { readonly file: string }, StageRunError, Services> =>
  Effect.scoped(
    Effect.gen(function*() {
      const ctx: RunContext = yield* Run
      const where = `eval ${label}`
      if (config.sampling.temperature === 0 && config.samples > 1) {
        return yield* new StageRunError({ stage: where, message: `samples = ${config.samples} with temperature 0 would repeat one greedy answer; use samples = 1 or a temperature > 0` })
      }
      const rewards = judges(ctx.recipe.task, config.accuracy)
      const judging = judgingOf(ctx.recipe.task, rewards)
      const rows = judging.tagged(ctx.data[config.split].slice(0, config.limit))
      // Rates over zero problems would read as a result (accuracy 0) where there is none.
      if (rows.length === 0) return yield* new StageRunError({ stage: where, message: `the ${config.split} split has no problems to evaluate` })
      const t0 = performance.now()
      const rewardStage = yield* Sampling.loadRewards(where, rewards)
      const t = emptyTally()
      // Tasks in the recipe's order; one the limit leaves without problems is left out (no rates over nothing).
      const perTask = Recipe.tasksOf(ctx.recipe.task).length > 1 ? new Map<string, Tally>() : null
      for (let start = 0; start < rows.length; start += config.batchSize) {
        const chunk = rows.slice(start, start + config.batchSize)
        const batch = yield* Sampling.rollouts(ctx, chunk, config.sampling, { groupSize: config.samples, stream: `eval/${label}`, firstGroup: start, stage: where })
        addChunk(t, perTask, yield* Sampling.score(where, rewardStage, batch), chunk, config.samples, judging)
      }
      const tasks = perTask === null ? undefined : Object.fromEntries(Recipe.tasksOf(ctx.recipe.task).flatMap((x) => (perTask.has(x.name) ? [[x.name, rates(perTask.get(x.name)!)]] : [])))
      const { accuracy, consAccuracy, formatRate, meanLength, languageConsistency } = rates(t)
      const record: EvalRecord = {
        name: label,
        step: ctx.progress.step,
        split: config.split,
        problems: rows.length,
        samplesPerProblem: config.samples,
        temperature: config.sampling.temperature,
        accuracy,
        consAccuracy,
        formatRate,
        meanLength,
        ...(languageConsistency !== undefined ? { languageConsistency } : {}),
        seconds: (performance.now() - t0) / 1000,
        ...(tasks !== undefined ? { tasks } : {}),
        samples: t.samples
      }
      const file = yield* save(ctx, record).pipe(Effect.mapError((e) => new StageRunError({ stage: where, message: `${e.path}: ${e.message}` })))
      const metrics = yield* Metrics.Metrics
      yield* metrics.record(ctx.progress.step, {
        [`eval/${label}/accuracy`]: record.accuracy,
        [`eval/${label}/cons_accuracy`]: record.consAccuracy as number,
        [`eval/${label}/format_rate`]: record.formatRate,
        [`eval/${label}/mean_length`]: record.meanLength,
        ...(languageConsistency !== undefined ? { [`eval/${label}/language_consistency`]: languageConsistency } : {}),
        ...Object.fromEntries(Object.entries(tasks ?? {}).flatMap(([name, r]) => [
          [`eval/${label}/${name}/accuracy`, r.accuracy],
          [`eval/${label}/${name}/cons_accuracy`, r.consAccuracy],
          [`eval/${label}/${name}/format_rate`, r.formatRate],
          [`eval/${label}/${name}/mean_length`, r.meanLength],
          ...(r.languageConsistency !== undefined ? [[`eval/${label}/${name}/language_consistency`, r.languageConsistency]] : [])
        ]))
      })
      ctx.log(summaryLine(label, config.samples, record))
      return { ...record, file }
    })
  )
