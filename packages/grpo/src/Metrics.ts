/**
 * Metric names, as TRL's `GRPOTrainer` and verl log them, and the batch-level metrics of a scored batch.
 * Each trainer step returns a `Record<string, number>` under these names; the engine forwards it.
 */
import { Batch, Columns } from "@r1flow/core"
import type { Float32, Int32, RecordBatch, Utf8, Vector } from "apache-arrow"
import * as Advantages from "./Advantages.js"

/** The step's loss (mean over its applied optimizer steps). */
export const loss = "loss"
/** Mean of the finite total rewards. */
export const reward = "reward"
/** Mean over groups of the within-group reward std (TRL's `reward_std`). */
export const rewardStd = "reward_std"
/** Per reward function: `rewards/<name>/mean`, `rewards/<name>/std` (batch std of its finite scores). */
export const rewardMean = (name: string) => `rewards/${name}/mean`
/** Per reward function std over the batch. */
export const rewardFnStd = (name: string) => `rewards/${name}/std`
/** Fraction of groups whose rewards are all equal (zero advantage). */
export const fracRewardZeroStd = "frac_reward_zero_std"
/** Rows whose total reward is NaN (advantage 0). */
export const nanRewards = "num_nan_rewards"
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

/** Reward and completion metrics of a scored (or advantages) batch. */
export const ofBatch = (batch: RecordBatch<Batch.ScoredType> | RecordBatch<Batch.AdvantagesType>): Record<string, number> => {
  const column = (name: string) => (batch as RecordBatch).getChild(name)!
  const rewards = Advantages.rewardValues(column("reward") as Vector<Float32>)
  const groupIds = Columns.int32Values(column("group_id") as Vector<Int32>)
  const groups = Advantages.compute(rewards, groupIds, { scaling: "none", epsilon: 0 })
  const stats = [...Advantages.groupStats(rewards, groupIds).values()]
  const out: Record<string, number> = {
    [reward]: finiteMeanStd(rewards).mean,
    [rewardStd]: stats.length === 0 ? NaN : stats.reduce((a, g) => a + g.std, 0) / stats.length,
    [fracRewardZeroStd]: groups.groups === 0 ? 0 : groups.zeroStdGroups / groups.groups,
    [nanRewards]: groups.nanRewards
  }
  for (const f of batch.schema.fields) {
    if (!f.name.startsWith("reward_") || String(f.type) !== "Float32") continue
    const name = f.name.slice("reward_".length)
    const { mean, std } = finiteMeanStd(Advantages.rewardValues(column(f.name) as Vector<Float32>))
    out[rewardMean(name)] = mean
    out[rewardFnStd(name)] = std
  }
  const lengths = Columns.int32Values(column("completion_length") as Vector<Int32>)
  const finish = strings(column("finish_reason") as Vector<Utf8>)
  let sum = 0, min = Infinity, max = -Infinity, cut = 0
  for (let i = 0; i < lengths.length; i++) {
    sum += lengths[i]
    min = Math.min(min, lengths[i])
    max = Math.max(max, lengths[i])
    if (finish[i] === "length") cut++
  }
  const n = lengths.length
  out[completionMeanLength] = n === 0 ? 0 : sum / n
  out[completionMinLength] = n === 0 ? 0 : min
  out[completionMaxLength] = n === 0 ? 0 : max
  out[completionClippedRatio] = n === 0 ? 0 : cut / n
  out[numTokens] = sum
  return out
}
