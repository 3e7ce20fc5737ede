/**
 * Group-relative advantages (DeepSeekMath §4.1.2, outcome supervision):
 *
 *   Â_i = (r_i − mean(r_g)) / (std(r_g) + ε)        for every token of completion o_i in group g
 *
 * Scaling variants (`scaling`):
 * - `group` (the paper): divide by the std of the row's own group.
 * - `batch`: divide by the std of all finite rewards of the batch (TRL `scale_rewards="batch"`); the
 *   mean is still the group's.
 * - `none` (Dr. GRPO, Liu et al. 2025): no division, Â_i = r_i − mean(r_g); removes the question-level
 *   difficulty bias of the std.
 *
 * Departures from the paper, stated:
 * - std is the unbiased sample std (n − 1), as `torch.std` in TRL and verl; the paper does not say.
 * - A NaN reward (a reward function that could not score) does not enter its group's mean or std;
 *   its row gets advantage 0, so it adds nothing to the policy gradient, and it is counted.
 * - A group with fewer than two finite rewards, or whose finite rewards are all equal, has zero
 *   variance: every row in it gets advantage 0 (the formula would give 0 / ε or 0 / 0) and the group
 *   is counted. Dropping such groups (DAPO dynamic sampling) is `DynamicSampling`'s job.
 */
import { Columns, Stage, Batch } from "@r1flow/core"
import type { Float32, Vector } from "apache-arrow"
import { Effect, Schema } from "effect"

/** How advantages are scaled after subtracting the group mean. */
export const Scaling = Schema.Literals(["group", "batch", "none"])
/** How advantages are scaled after subtracting the group mean. */
export type Scaling = typeof Scaling.Type

/** Advantage configuration. `epsilon` guards the division by the std. */
export const Config = Schema.Struct({
  scaling: Scaling.pipe(Schema.withDecodingDefaultKey(Effect.succeed("group" as const))),
  epsilon: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(1e-4)))
})
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

/** Unbiased std of the finite values of `xs`; 0 with fewer than two. */
const finiteStd = (xs: Float32Array): number => {
  let n = 0, sum = 0
  for (const x of xs) if (Number.isFinite(x)) { n++; sum += x }
  if (n < 2) return 0
  const mean = sum / n
  let ss = 0
  for (const x of xs) if (Number.isFinite(x)) ss += (x - mean) ** 2
  return Math.sqrt(ss / (n - 1))
}

/** The advantage of every row (pure; `rewards` and `groupIds` are `[B]`). */
export const compute = (rewards: Float32Array, groupIds: Int32Array, config: Config): Result => {
  if (rewards.length !== groupIds.length) throw new RangeError(`rewards has ${rewards.length} rows, group ids ${groupIds.length}`)
  const groups = groupStats(rewards, groupIds)
  const batchStd = config.scaling === "batch" ? finiteStd(rewards) : 0
  const advantages = new Float32Array(rewards.length)
  let nanRewards = 0
  for (let i = 0; i < rewards.length; i++) {
    const r = rewards[i]
    if (!Number.isFinite(r)) {
      nanRewards++
      continue
    }
    const g = groups.get(groupIds[i])!
    if (isZeroStd(g)) continue
    const centred = r - g.mean
    advantages[i] = config.scaling === "group"
      ? centred / (g.std + config.epsilon)
      : config.scaling === "batch"
      ? centred / (batchStd + config.epsilon)
      : centred
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
