/**
 * Advantages of outcome rewards, one per row (DeepSeekMath §4.1.2, outcome supervision), by `estimator`
 * (r_i the row's reward, g its group, B the batch, ε = `epsilon`; std is the unbiased sample std):
 *
 *   grpo                  GRPO (the paper)                        Â_i = (r_i − mean_g r) / s
 *   rloo                  RLOO (Ahmadian et al. 2024)             Â_i = (r_i − mean_{j∈g, j≠i} r_j) / s = n/(n−1) · (r_i − mean_g r) / s
 *   reinforce++           REINFORCE++ (Hu 2025)                   Â_i = (r_i − mean_B r) / (std_B r + ε)
 *   reinforce++_baseline  REINFORCE++-baseline (Hu 2025; verl)    x_i = r_i − mean_g r,  Â_i = (x_i − mean_B x) / (std_B x + ε)
 *
 * grpo and rloo divide by s, by `scaling`: `group` std_g r + ε (the paper); `batch` std_B r + ε (TRL
 * `scale_rewards="batch"`; the baseline is still the group's); `none` 1 (Dr. GRPO, Liu et al. 2025: removes the
 * question-level difficulty bias of the std). `scaling` defaults to `group` for grpo and to `none` for rloo (RLOO
 * as verl and OpenRLHF run it); the reinforce++ estimators whiten over the batch and refuse `scaling`.
 *
 * Departures from the papers, stated:
 * - std is the unbiased sample std (n − 1), as `torch.std` in TRL and verl; the paper does not say.
 * - A NaN reward (a reward function that could not score) enters no mean or std (group or batch); its row gets
 *   advantage 0, so it adds nothing to the policy gradient, and it is counted. n is the group's finite rewards.
 * - A group with fewer than two finite rewards, or whose finite rewards are all equal, has zero variance: under
 *   grpo, rloo and reinforce++_baseline every row in it gets advantage 0 (the formula would give 0 / ε, 0 / 0, or
 *   no leave-one-out mean) and the group is counted. reinforce++ has no group baseline: such a group's rows keep
 *   their whitened reward (that is its point); the count is still reported. A batch whose whitened values have
 *   zero variance gives every row 0. Dropping groups (DAPO dynamic sampling) is `DynamicSampling`'s job.
 * - The reinforce++ estimators whiten per sequence; verl and OpenRLHF whiten per token (a row weighs as its length),
 *   and REINFORCE++ puts the KL in the reward, here it is in the loss (`Loss`, β; verl `use_kl_loss`). Under
 *   reinforce++_baseline mean_B x is 0 up to rounding (each group's x sum to 0); zero-variance rows still count in
 *   std_B x as zeros.
 */
import { Columns, Stage, Batch } from "@r1flow/core"
import type { Float32, Vector } from "apache-arrow"
import { Effect, Schema } from "effect"

/** How advantages are scaled after subtracting the group mean. */
export const Scaling = Schema.Literals(["group", "batch", "none"])
/** How advantages are scaled after subtracting the group mean. */
export type Scaling = typeof Scaling.Type

/** The advantage estimator (see the module doc). */
export const Estimator = Schema.Literals(["grpo", "rloo", "reinforce++", "reinforce++_baseline"])
/** The advantage estimator. */
export type Estimator = typeof Estimator.Type

const whitens = (e: Estimator) => e === "reinforce++" || e === "reinforce++_baseline"

/** Advantage configuration. `epsilon` guards the division by the std; `scaling` is for grpo and rloo only. */
export const Config = Schema.Struct({
  estimator: Estimator.pipe(Schema.withDecodingDefaultKey(Effect.succeed("grpo" as const))),
  scaling: Schema.optionalKey(Scaling),
  epsilon: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(1e-4)))
}).check(Schema.makeFilter((c) =>
  c.scaling !== undefined && whitens(c.estimator)
    ? { path: ["scaling"], issue: `estimator "${c.estimator}" whitens over the batch; scaling is for "grpo" and "rloo"` }
    : undefined))
/** Advantage configuration. */
export type Config = typeof Config.Type

/** The batch's counts, as `compute` found them (the step's metrics count from the batch itself, `Metrics.ofBatch`). */
export interface Stats {
  readonly rows: number
  readonly groups: number
  /** Rows whose reward is NaN (advantage set to 0). */
  readonly nanRewards: number
  /** Groups with zero reward variance (or fewer than two finite rewards). */
  readonly zeroStdGroups: number
}

/** Advantages of one batch plus the ids of its zero-variance groups. */
export interface Result extends Stats {
  /** `[B]`, aligned with the input rows. */
  readonly advantages: Float32Array
  /** Group ids with zero reward variance, in order of first appearance. */
  readonly zeroStdGroupIds: ReadonlyArray<number>
}

/** One group's finite rewards: count, sum, sum of squared deviations, range, mean and unbiased std. */
export interface GroupStats { n: number; sum: number; sumSq: number; min: number; max: number; mean: number; std: number }

/** Per-group mean and unbiased std over the finite rewards of each group, in order of first appearance. */
export const groupStats = (rewards: Float32Array, groupIds: Int32Array): Map<number, GroupStats> => {
  const groups = new Map<number, GroupStats>()
  for (let i = 0; i < rewards.length; i++) {
    let g = groups.get(groupIds[i])
    if (g === undefined) {
      g = { n: 0, sum: 0, sumSq: 0, min: Infinity, max: -Infinity, mean: 0, std: 0 }
      groups.set(groupIds[i], g)
    }
    const r = rewards[i]
    if (!Number.isFinite(r)) continue
    g.n++
    g.sum += r
    g.min = Math.min(g.min, r)
    g.max = Math.max(g.max, r)
  }
  for (const g of groups.values()) g.mean = g.n > 0 ? g.sum / g.n : 0
  // Second pass for the variance: sums of squared deviations, not E[r²] − E[r]², which cancels badly.
  for (let i = 0; i < rewards.length; i++) {
    const r = rewards[i]
    if (!Number.isFinite(r)) continue
    const g = groups.get(groupIds[i])!
    g.sumSq += (r - g.mean) ** 2
  }
  for (const g of groups.values()) g.std = g.n > 1 ? Math.sqrt(g.sumSq / (g.n - 1)) : 0
  return groups
}

/** True when a group carries no learning signal: fewer than two finite rewards, or all equal. */
export const isZeroStd = (g: GroupStats): boolean => g.n < 2 || g.max === g.min

/** Mean and unbiased std of the finite values of `xs`; std 0 with fewer than two. */
const finiteMeanStd = (xs: ArrayLike<number>): { mean: number; std: number } => {
  let n = 0, sum = 0
  for (let i = 0; i < xs.length; i++) if (Number.isFinite(xs[i])) { n++; sum += xs[i] }
  if (n < 2) return { mean: n === 0 ? 0 : sum, std: 0 }
  const mean = sum / n
  let ss = 0
  for (let i = 0; i < xs.length; i++) if (Number.isFinite(xs[i])) ss += (xs[i] - mean) ** 2
  return { mean, std: Math.sqrt(ss / (n - 1)) }
}

/** x_i before any scaling: the reward less the estimator's baseline (NaN rows stay NaN). */
const centre = (e: Estimator, r: number, g: GroupStats): number =>
  e === "grpo" || e === "reinforce++_baseline" ? r - g.mean : e === "rloo" ? (r - g.mean) * g.n / (g.n - 1) : r

/** The advantage of every row (pure; `rewards` and `groupIds` are `[B]`). */
export const compute = (rewards: Float32Array, groupIds: Int32Array, config: Config): Result => {
  if (rewards.length !== groupIds.length) throw new RangeError(`rewards has ${rewards.length} rows, group ids ${groupIds.length}`)
  const groups = groupStats(rewards, groupIds)
  const { estimator, epsilon } = config
  const scaling = config.scaling ?? (estimator === "rloo" ? "none" : "group")
  const x = new Float64Array(rewards.length).fill(NaN)
  let nanRewards = 0
  for (let i = 0; i < rewards.length; i++) {
    if (Number.isFinite(rewards[i])) x[i] = centre(estimator, rewards[i], groups.get(groupIds[i])!)
    else nanRewards++
  }
  const batch = whitens(estimator) ? finiteMeanStd(x) : scaling === "batch" ? finiteMeanStd(rewards) : { mean: 0, std: 0 }
  const advantages = new Float32Array(rewards.length)
  for (let i = 0; i < rewards.length; i++) {
    const g = groups.get(groupIds[i])!
    if (!Number.isFinite(x[i]) || (estimator !== "reinforce++" && isZeroStd(g))) continue
    advantages[i] = whitens(estimator)
      ? (batch.std === 0 ? 0 : (x[i] - batch.mean) / (batch.std + epsilon))
      : scaling === "group"
      ? x[i] / (g.std + epsilon)
      : scaling === "batch"
      ? x[i] / (batch.std + epsilon)
      : x[i]
  }
  const zeroStdGroupIds = [...groups].filter(([, g]) => isZeroStd(g)).map(([id]) => id)
  return { advantages, rows: rewards.length, groups: groups.size, nanRewards, zeroStdGroups: zeroStdGroupIds.length, zeroStdGroupIds }
}

const NAME = "grpo/advantages"

/** A nullable Float32 reward column as values, with null read as NaN (not scored). */
export const rewardValues = (column: Vector<Float32>): Float32Array => {
  const values = Columns.float32Values(column)
  if (column.nullCount === 0) return values
  const out = Float32Array.from(values)
  for (let i = 0; i < out.length; i++) if (!column.isValid(i)) out[i] = NaN
  return out
}

/** The Arrow stage `Scored → Advantages`: adds the `advantage` column. Zero-variance groups are kept (advantage 0). */
export const stage = (config: Config): Stage.Stage<Batch.ScoredType, Batch.AdvantagesType> =>
  Stage.make({
    name: NAME,
    input: Batch.Scored,
    output: Batch.Advantages,
    transform: (batch) => {
      const { advantages } = compute(rewardValues(batch.getChild("reward")!), Columns.int32Values(batch.getChild("group_id")!), config)
      return Stage.addColumns<Batch.AdvantagesType>(NAME, batch, Batch.Advantages, { advantage: Columns.makeFloat32(advantages) })
    }
  })
