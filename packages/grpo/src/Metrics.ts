/**
 * A GRPO step's metrics, computed once per step (`ofStep`) from three sources, each key from exactly one:
 *
 *   the batch with advantages  → rewards, group statistics, completions          (`ofBatch`)
 *   the reward failure counters → rewards/<name>/failed_calls, failed_rows         (`failureCounts`)
 *   the update's diagnostics    → loss, grad_norm, kl, entropy, clip ratios, …     (`ofUpdate`)
 *   the batch, split by task    → task/<name>/reward_mean, task/<name>/<reward>_mean (`ofTasks`, mixtures only)
 *
 * Names follow TRL's `GRPOTrainer` and verl; docs/metrics.md has every key with its exact definition.
 */
import { Read } from "@r1flow/backend"
import type { Batch, RewardStage } from "@r1flow/core"
import { Columns, Reward } from "@r1flow/core"
import * as tf from "@tensorflow/tfjs"
import { Effect } from "effect"
import type { Float32, Int32, RecordBatch, Utf8, Vector } from "apache-arrow"
import * as Advantages from "./Advantages.js"
import type * as Guard from "./Guard.js"
import type * as Optimizer from "./Optimizer.js"
import type * as Train from "./Train.js"
import type * as UpdateBatch from "./UpdateBatch.js"

/** The step's loss (mean over its applied optimizer steps). */
export const loss = "loss"
/** Mean of the finite total rewards. */
export const reward = "reward"
/** Mean over groups of the within-group (unbiased) std of the total reward (TRL's `reward_std`). */
export const rewardStd = "reward_std"
/** Per reward function: `rewards/<name>/mean`, `rewards/<name>/std` (batch std of its finite scores). */
export const rewardMean = (name: string) => `rewards/${name}/mean`
/** Per reward function std over the batch. */
export const rewardFnStd = (name: string) => `rewards/${name}/std`
/** Fraction of groups whose rewards are all equal (zero advantage). */
export const fracRewardZeroStd = "frac_reward_zero_std"
/** Rows whose total reward is NaN (advantage 0). */
export const nanRewards = "num_nan_rewards"
/** Per reward function: the fraction of rows it scored NaN. */
export const rewardFracNan = (name: string) => `rewards/${name}/frac_nan`
/** Fraction of rows whose total reward is NaN. */
export const totalFracNan = "reward_frac_nan"
/** Per reward function: calls that failed under `onError: "nan"`, since the run's reward stage was made. */
export const failedCalls = (name: string) => `rewards/${name}/failed_calls`
/** Per reward function: rows set to NaN by failed calls, since the reward stage was made. */
export const failedRows = (name: string) => `rewards/${name}/failed_rows`
export const completionMeanLength = "completions/mean_length"
export const completionMinLength = "completions/min_length"
export const completionMaxLength = "completions/max_length"
/** Fraction of completions cut at the length limit (finish reason `length`). */
export const completionClippedRatio = "completions/clipped_ratio"
/** Token mean of the k3 KL to the reference (only when β > 0). */
export const kl = "kl"
/** Token mean of the policy's entropy over completion tokens. */
export const entropy = "entropy"
export const clipLow = "clip_ratio/low_mean"
export const clipHigh = "clip_ratio/high_mean"
export const clipRegion = "clip_ratio/region_mean"
/** Token mean of [dual-clip's bound −δÂ applied] (only with `delta`). */
export const dualClip = "clip_ratio/dual_mean"
/** Token mean of the TIS weights w = min(π_old^trainer / π_sampler, C) (only with `tisCap`). */
export const tisMean = "sampling/importance_sampling_ratio/mean"
/** Largest TIS weight (≤ C). */
export const tisMax = "sampling/importance_sampling_ratio/max"
/** Fraction of tokens whose ratio π_old^trainer / π_sampler exceeded C. */
export const tisFracCapped = "sampling/importance_sampling_ratio/frac_capped"
/** Global gradient norm before clipping (mean over the step's applied optimizer steps). */
export const gradNorm = "grad_norm"
export const learningRate = "learning_rate"
/** Optimizer steps applied in this trainer step. */
export const optimizerSteps = "optimizer_steps"
/** Optimizer steps skipped by the non-finite guard since the start of the run. */
export const skippedSteps = "skipped_steps"
/** Completion tokens the step trained on. */
export const numTokens = "num_tokens"
/** Tokens (prompt + completion, × passes) per second of the update (verl's `perf/throughput`). */
export const throughput = "perf/throughput"
/** Groups dynamic sampling dropped (equal rewards) while filling the step's batch (only when it is on). */
export const droppedGroups = "dynamic_sampling/dropped_groups"

/** Per task (`metadata.task`): the mean of the finite total rewards over its rows. */
export const taskRewardMean = (task: string) => `task/${task}/reward_mean`
/** Per task and reward function: the mean of its finite scores over the task's rows. */
export const taskRewardFnMean = (task: string, reward: string) => `task/${task}/${reward}_mean`

/** A Utf8 column as strings (null as ""). */
export const strings = (vector: Vector<Utf8>): Array<string> => Array.from(vector as Iterable<string | null>, (s) => s ?? "")

const finiteMeanStd = (xs: Float32Array): { mean: number; std: number } => {
  let n = 0, sum = 0
  for (const x of xs) if (Number.isFinite(x)) { n++; sum += x }
  if (n === 0) return { mean: NaN, std: NaN }
  const mean = sum / n
  let ss = 0
  for (const x of xs) if (Number.isFinite(x)) ss += (x - mean) ** 2
  return { mean, std: n > 1 ? Math.sqrt(ss / (n - 1)) : 0 }
}

const fracNan = (xs: Float32Array): number => {
  let nan = 0
  for (const x of xs) if (x !== x) nan++
  return xs.length === 0 ? 0 : nan / xs.length
}

/** The total reward's group statistics, from one pass of `Advantages.groupStats`. */
const groupMetrics = (rewards: Float32Array, groupIds: Int32Array): Record<string, number> => {
  const groups = [...Advantages.groupStats(rewards, groupIds).values()]
  let nan = 0
  for (const r of rewards) if (!Number.isFinite(r)) nan++
  return {
    [reward]: finiteMeanStd(rewards).mean,
    [rewardStd]: groups.length === 0 ? NaN : groups.reduce((a, g) => a + g.std, 0) / groups.length,
    [fracRewardZeroStd]: groups.length === 0 ? 0 : groups.filter(Advantages.isZeroStd).length / groups.length,
    [nanRewards]: nan
  }
}

/** Completion lengths and truncation over the batch's rows. */
const completionMetrics = (lengths: Int32Array, finish: ReadonlyArray<string>): Record<string, number> => {
  let sum = 0, min = Infinity, max = -Infinity, cut = 0
  for (let i = 0; i < lengths.length; i++) {
    sum += lengths[i]
    min = Math.min(min, lengths[i])
    max = Math.max(max, lengths[i])
    if (finish[i] === "length") cut++
  }
  const n = lengths.length
  return {
    [completionMeanLength]: n === 0 ? 0 : sum / n,
    [completionMinLength]: n === 0 ? 0 : min,
    [completionMaxLength]: n === 0 ? 0 : max,
    [completionClippedRatio]: n === 0 ? 0 : cut / n,
    [numTokens]: sum
  }
}

/**
 * Reward, group and completion metrics of a scored batch (or one with advantages). Per reward function
 * (each `reward_<name>` Float32 column) its mean and unbiased std over its finite scores, and its NaN fraction.
 */
export const ofBatch = (batch: RecordBatch<Batch.ScoredType> | RecordBatch<Batch.AdvantagesType>): Record<string, number> => {
  const column = (name: string) => (batch as RecordBatch).getChild(name)!
  const total = Advantages.rewardValues(column("reward") as Vector<Float32>)
  const perReward = batch.schema.fields
    .filter((f) => f.name.startsWith("reward_") && String(f.type) === "Float32")
    .map((f) => [f.name.slice("reward_".length), Advantages.rewardValues(column(f.name) as Vector<Float32>)] as const)
  const out = groupMetrics(total, Columns.int32Values(column("group_id") as Vector<Int32>))
  for (const [name, values] of perReward) {
    const { mean, std } = finiteMeanStd(values)
    out[rewardMean(name)] = mean
    out[rewardFnStd(name)] = std
  }
  Object.assign(out, completionMetrics(Columns.int32Values(column("completion_length") as Vector<Int32>), strings(column("finish_reason") as Vector<Utf8>)))
  // After the completions: metrics.jsonl has always listed the NaN fractions here.
  for (const [name, values] of perReward) out[rewardFracNan(name)] = fracNan(values)
  out[totalFracNan] = fracNan(total)
  return out
}

/** The mean of the finite values of `xs` at `rows`, or NaN when none is finite. */
const finiteMeanAt = (xs: Float32Array, rows: ReadonlyArray<number>): number => {
  let n = 0, sum = 0
  for (const i of rows) if (Number.isFinite(xs[i])) { n++; sum += xs[i] }
  return n === 0 ? NaN : sum / n
}

/**
 * Reward metrics per task: for each task present in the batch (by `metadata.task`, names sorted), the
 * mean total reward and each reward function's mean over that task's rows, finite scores only. A key is
 * left out when no row of the task has a finite value there (a reward not routed to the task), so a
 * reward declared for other tasks never reads as scoring 0 on this one. Rows without a task are not counted.
 */
export const ofTasks = (batch: RecordBatch<Batch.ScoredType> | RecordBatch<Batch.AdvantagesType>): Record<string, number> => {
  const column = (name: string) => (batch as RecordBatch).getChild(name)!
  const byTask = new Map<string, Array<number>>()
  strings(column("metadata") as Vector<Utf8>).forEach((text, i) => {
    const task = Reward.parseMetadata(text).task
    if (typeof task !== "string") return
    const rows = byTask.get(task) ?? []
    rows.push(i)
    byTask.set(task, rows)
  })
  const total = Advantages.rewardValues(column("reward") as Vector<Float32>)
  const perReward = batch.schema.fields
    .filter((f) => f.name.startsWith("reward_") && String(f.type) === "Float32")
    .map((f) => [f.name.slice("reward_".length), Advantages.rewardValues(column(f.name) as Vector<Float32>)] as const)
  const out: Record<string, number> = {}
  for (const task of [...byTask.keys()].sort()) {
    const rows = byTask.get(task)!
    const means: Array<readonly [string, number]> = [[taskRewardMean(task), finiteMeanAt(total, rows)], ...perReward.map(([name, values]) => [taskRewardFnMean(task, name), finiteMeanAt(values, rows)] as const)]
    for (const [key, mean] of means) if (Number.isFinite(mean)) out[key] = mean
  }
  return out
}

/** The reward stage's failure counters (`RewardStage.failures()`), per reward in order. */
export const failureCounts = (failures: Readonly<Record<string, RewardStage.Failures>>): Record<string, number> => {
  const out: Record<string, number> = {}
  for (const [name, f] of Object.entries(failures)) {
    out[failedCalls(name)] = f.calls
    out[failedRows(name)] = f.rows
  }
  return out
}

/** Token-weighted sums of `Loss.Output`'s token means over an update's micro-batches, and Σ entropy · m. */
export interface Diagnostics { tokens: number; kl: number; clipLow: number; clipHigh: number; clipRegion: number; entropy: number; dualClip: number }

/** An empty accumulator, one per update. */
export const emptyDiagnostics = (): Diagnostics => ({ kl: 0, clipLow: 0, clipHigh: 0, clipRegion: 0, entropy: 0, tokens: 0, dualClip: 0 })

/** Adds one micro-batch: its token means weighted by its tokens; `entropy` is already a sum over tokens. */
export const addDiagnostics = (d: Diagnostics, m: Readonly<Omit<Diagnostics, "dualClip"> & { dualClip?: number }>): void => {
  d.tokens += m.tokens
  d.kl += m.kl * m.tokens
  d.clipLow += m.clipLow * m.tokens
  d.clipHigh += m.clipHigh * m.tokens
  d.clipRegion += m.clipRegion * m.tokens
  d.entropy += m.entropy
  if (m.dualClip !== undefined) d.dualClip += m.dualClip * m.tokens
}

/** Named scalars stacked into one tensor `[n]` (`stackScalars`), to be read back later with one device read (`readScalars`). */
export interface Stacked<K extends string> {
  readonly keys: ReadonlyArray<K>
  readonly values: tf.Tensor1D
}

/**
 * Stacks named scalars into one tensor kept past the enclosing `tf.tidy` / `tf.variableGrads`, so that the
 * forward that made them need not wait for a read (WebGPU has only async ones); `readScalars` reads and frees it.
 */
export const stackScalars = <K extends string>(scalars: Record<K, tf.Tensor>): Stacked<K> => {
  const keys = Object.keys(scalars) as Array<K>
  return { keys, values: tf.keep(tf.stack(keys.map((k) => scalars[k]))) as tf.Tensor1D }
}

/**
 * An update's diagnostics from its micro-batches' stacked scalars (`stackScalars` of every `Diagnostics` key), all
 * read back with one async device read and added in micro-batch order (`addDiagnostics`); the tensors are disposed.
 */
export const diagnosticsOf = (stacked: ReadonlyArray<Stacked<keyof Diagnostics>>): Effect.Effect<Diagnostics> => {
  const d = emptyDiagnostics()
  if (stacked.length === 0) return Effect.succeed(d)
  const all = tf.tidy(() => tf.concat(stacked.map((s) => s.values))) // [Σ n]
  tf.dispose(stacked.map((s) => s.values))
  return Effect.map(Read.floatsEffect(all), (values) => {
    let at = 0
    for (const s of stacked) {
      addDiagnostics(d, Object.fromEntries(s.keys.map((k, i) => [k, values[at + i]])) as Record<keyof Diagnostics, number>)
      at += s.keys.length
    }
    return d
  })
}

/** What an update ran with, besides its diagnostics, for its metrics. */
export interface UpdateRun {
  readonly optimizer: Optimizer.AdamW
  readonly guard: Guard.Guard
  /** Whether a reference was scored (β > 0): only then is `kl` logged. */
  readonly kl: boolean
  /** Whether dual-clip was on (`delta`): only then is `clip_ratio/dual_mean` logged. */
  readonly dualClip: boolean
  /** The TIS weights' statistics (`tisCap`), else null. */
  readonly tis: UpdateBatch.TisStats | null
  /** Prompt + completion tokens of the batch, times μ, over `seconds`: the throughput. */
  readonly tokens: number
  readonly seconds: number
}

/** The update's metrics: means over its applied optimizer steps, token means of the diagnostics, throughput. */
export const ofUpdate = (d: Diagnostics, applied: ReadonlyArray<Train.StepResult>, t: UpdateRun): Record<string, number> => {
  const mean = (xs: Array<number>) => (xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length)
  const perToken = (x: number) => (d.tokens > 0 ? x / d.tokens : 0)
  return {
    [loss]: mean(applied.map((r) => r.loss)),
    [gradNorm]: mean(applied.map((r) => r.gradNorm)),
    [learningRate]: applied.length > 0 ? applied[applied.length - 1].learningRate : t.optimizer.currentLearningRate(),
    ...(t.kl ? { [kl]: perToken(d.kl) } : {}),
    [entropy]: perToken(d.entropy),
    [clipLow]: perToken(d.clipLow),
    [clipHigh]: perToken(d.clipHigh),
    [clipRegion]: perToken(d.clipRegion),
    ...(t.dualClip ? { [dualClip]: perToken(d.dualClip) } : {}),
    ...(t.tis === null ? {} : { [tisMean]: t.tis.mean, [tisMax]: t.tis.max, [tisFracCapped]: t.tis.fracCapped }),
    [optimizerSteps]: applied.length,
    [skippedSteps]: t.guard.skipped(),
    [throughput]: t.tokens / t.seconds
  }
}

/** A step's metrics: each key from one source (the batch, the failure counters, the update, dynamic sampling). */
export const ofStep = (step: {
  readonly batch: RecordBatch<Batch.AdvantagesType>
  readonly failures: Readonly<Record<string, RewardStage.Failures>>
  readonly update: Readonly<Record<string, number>>
  readonly droppedGroups: number | undefined
}): Record<string, number> => ({
  ...ofBatch(step.batch),
  ...failureCounts(step.failures),
  ...step.update,
  ...(step.droppedGroups === undefined ? {} : { [droppedGroups]: step.droppedGroups })
})
