/**
 * The arithmetic of distributed-bench: step times from when a run's steps ended, the staleness
 * distribution of its rollouts, and the rule that says where adding workers stops paying.
 *
 * Step time. A run appends one `perf.jsonl` line per step when the step ends; the bench notes the wall
 * time t_k at which line k appeared. Step k (k ≥ 2) took t_k − t_{k−1}; step 1 is left out (it holds the
 * start-up: model build, worker launch, first weights publish, wasm warm-up), and so is every step that
 * began before the last worker was up (many workers on few cores take longer to start than a step).
 *
 * Update time. `perf/throughput` is (Σ prompt_length + Σ completion_length) · μ / seconds of the update
 * (docs/metrics.md), so the update took U = tokens · μ / throughput, tokens read from the step's rollouts.
 *
 * Saturation (where the trainer becomes the bottleneck). Rows sorted by worker count N with median step
 * time s(N). The saturation point is the smallest N from which no larger N is faster by more than a
 * fraction `tolerance`: s(M) ≥ (1 − tolerance) · s(N) for every M > N. There the step is bound by
 * something workers cannot add: the trainer when the update U is most of the step (U / s ≥ `trainerShare`),
 * else a floor of the draw (one group's own time once N ≥ groups per step, or the shared CPUs).
 */

/** Median of `xs` (upper middle for an even count); NaN for none. */
export const median = (xs: ReadonlyArray<number>): number =>
  xs.length === 0 ? NaN : [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

/**
 * Seconds of each step after the first, from the wall times (ms) at which steps 1…n ended, in order.
 * Fails on an unsorted list: it means the times were not recorded as the steps ended.
 */
export const stepSeconds = (endedAtMs: ReadonlyArray<number>): Array<number> => {
  const out: Array<number> = []
  for (let k = 1; k < endedAtMs.length; k++) {
    const dt = endedAtMs[k] - endedAtMs[k - 1]
    if (!(dt >= 0)) throw new RangeError(`stepSeconds: step ${k + 1} ended at ${endedAtMs[k]} ms, before step ${k} (${endedAtMs[k - 1]} ms)`)
    out.push(dt / 1000)
  }
  return out
}

/**
 * The step seconds of the steps that began at or after `fromMs` (every worker up), with a flag saying
 * whether any did; when none did, all of `stepSeconds` (the figures then include the start-up).
 */
export const steadySeconds = (endedAtMs: ReadonlyArray<number>, fromMs: number): { readonly seconds: Array<number>; readonly steady: boolean } => {
  const all = stepSeconds(endedAtMs)
  // Step k + 2 began when step k + 1 ended, at endedAtMs[k].
  const steady = all.filter((_, k) => endedAtMs[k] >= fromMs)
  return steady.length > 0 ? { seconds: steady, steady: true } : { seconds: all, steady: false }
}

/** Seconds of an update from its `perf/throughput` (tokens · μ / s), its batch's tokens and μ. */
export const updateSeconds = (throughput: number, tokens: number, iterations: number): number => {
  if (!(throughput > 0)) throw new RangeError(`updateSeconds: perf/throughput must be > 0, got ${throughput}`)
  return (tokens * iterations) / throughput
}

/** How many rows had each staleness, ascending by staleness. */
export const histogram = (staleness: ReadonlyArray<number>): Array<{ readonly staleness: number; readonly count: number }> => {
  const counts = new Map<number, number>()
  for (const s of staleness) {
    if (!Number.isInteger(s) || s < 0) throw new RangeError(`histogram: staleness must be a non-negative integer, got ${s}`)
    counts.set(s, (counts.get(s) ?? 0) + 1)
  }
  return [...counts].sort(([a], [b]) => a - b).map(([s, count]) => ({ staleness: s, count }))
}

/** A histogram as `0: 75% · 1: 25%` (shares of all rows, rounded to whole percent); `–` when empty. */
export const formatHistogram = (h: ReadonlyArray<{ readonly staleness: number; readonly count: number }>): string => {
  const total = h.reduce((n, b) => n + b.count, 0)
  return total === 0 ? "–" : h.map((b) => `${b.staleness}: ${Math.round((100 * b.count) / total)}%`).join(" · ")
}

/** One worker count's medians. */
export interface Point {
  readonly workers: number
  /** Median step seconds. */
  readonly step: number
  /** Median update seconds. */
  readonly update: number
}

/** Where adding workers stopped paying, and what bound the step there. */
export interface Saturation {
  /** The smallest worker count from which no larger one is faster by more than the tolerance. */
  readonly workers: number
  /** Update / step at that point. */
  readonly updateShare: number
  /** `trainer` when the update is at least `trainerShare` of the step, else `draw`. */
  readonly bound: "trainer" | "draw"
}

/** The saturation point of `points` (any order, distinct worker counts; see the module doc). */
export const saturation = (points: ReadonlyArray<Point>, tolerance = 0.1, trainerShare = 0.5): Saturation => {
  if (points.length === 0) throw new RangeError("saturation: no points")
  const sorted = [...points].sort((a, b) => a.workers - b.workers)
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i].workers === sorted[i - 1].workers) throw new RangeError(`saturation: worker count ${sorted[i].workers} appears twice`)
  }
  const bad = sorted.find((p) => !(p.step > 0) || !(p.update >= 0))
  if (bad !== undefined) throw new RangeError(`saturation: at ${bad.workers} worker(s) step ${bad.step} s and update ${bad.update} s; need step > 0, update ≥ 0`)
  const at = sorted.find((p, i) => sorted.slice(i + 1).every((q) => q.step >= (1 - tolerance) * p.step))!
  const updateShare = at.update / at.step
  return { workers: at.workers, updateShare, bound: updateShare >= trainerShare ? "trainer" : "draw" }
}
