import { describe, expect, it } from "vitest"
import * as RolloutScaling from "../src/RolloutScaling.js"

describe("RolloutScaling", () => {
  it("stepSeconds drops step 1 and differences the end times; refuses times out of order", () => {
    expect(RolloutScaling.stepSeconds([5000, 6500, 7250, 9250])).toEqual([1.5, 0.75, 2])
    expect(RolloutScaling.stepSeconds([5000])).toEqual([])
    expect(() => RolloutScaling.stepSeconds([5000, 4000])).toThrow(/step 2 ended at 4000 ms, before step 1/)
  })

  it("steadySeconds keeps the steps that began once every worker was up, else all of them, flagged", () => {
    // Steps 2, 3, 4 began as steps 1, 2, 3 ended, at 5000, 6500, 7250 ms; every worker up at 7000 ms: step 4 only.
    expect(RolloutScaling.steadySeconds([5000, 6500, 7250, 9250], 7000)).toEqual({ seconds: [2], steady: true })
    expect(RolloutScaling.steadySeconds([5000, 6500, 7250, 9250], 6500)).toEqual({ seconds: [0.75, 2], steady: true })
    expect(RolloutScaling.steadySeconds([5000, 6500, 7250, 9250], 5000)).toEqual({ seconds: [1.5, 0.75, 2], steady: true })
    expect(RolloutScaling.steadySeconds([5000, 6500, 7250, 9250], 9999)).toEqual({ seconds: [1.5, 0.75, 2], steady: false })
  })

  it("updateSeconds inverts perf/throughput = tokens · μ / s", () => {
    // 1,200 tokens, 2 passes, at 4,800 tokens/s: 0.5 s.
    expect(RolloutScaling.updateSeconds(4800, 1200, 2)).toBeCloseTo(0.5, 12)
    expect(() => RolloutScaling.updateSeconds(0, 1200, 1)).toThrow(/perf\/throughput must be > 0/)
  })

  it("histogram counts each staleness, ascending; formatHistogram gives whole-percent shares", () => {
    const rows = [1, 0, 1, 1, 2, 1, 0, 1]
    expect(RolloutScaling.histogram(rows)).toEqual([{ staleness: 0, count: 2 }, { staleness: 1, count: 5 }, { staleness: 2, count: 1 }])
    // 2/8, 5/8, 1/8 = 25%, 62.5% → 63%, 12.5% → 13% (Math.round rounds halves up).
    expect(RolloutScaling.formatHistogram(RolloutScaling.histogram(rows))).toBe("0: 25% · 1: 63% · 2: 13%")
    expect(RolloutScaling.formatHistogram([])).toBe("–")
    expect(() => RolloutScaling.histogram([0, -1])).toThrow(/non-negative integer, got -1/)
  })

  it("saturation: the first count no larger count beats by more than the tolerance, trainer-bound when the update dominates", () => {
    // Draw-bound halving until 4 workers, then the 0.9 s update holds the step near 1 s.
    const trainer = [
      { workers: 16, step: 0.98, update: 0.9 },
      { workers: 1, step: 8, update: 0.9 },
      { workers: 2, step: 4.1, update: 0.9 },
      { workers: 4, step: 1.05, update: 0.9 },
      { workers: 8, step: 1.0, update: 0.9 }
    ]
    const s = RolloutScaling.saturation(trainer)
    expect(s.workers).toBe(4)
    expect(s.updateShare).toBeCloseTo(0.9 / 1.05, 12)
    expect(s.bound).toBe("trainer")
    // A small update: the step stops at a floor of the draw (one group's time), not at the trainer.
    expect(RolloutScaling.saturation([{ workers: 1, step: 4, update: 0.1 }, { workers: 4, step: 1.2, update: 0.1 }, { workers: 16, step: 1.15, update: 0.1 }]))
      .toEqual({ workers: 4, updateShare: 0.1 / 1.2, bound: "draw" })
    // A later count faster by more than the tolerance moves the point past a plateau.
    expect(RolloutScaling.saturation([{ workers: 1, step: 4, update: 0.1 }, { workers: 2, step: 3.9, update: 0.1 }, { workers: 4, step: 2, update: 0.1 }]).workers).toBe(4)
    expect(() => RolloutScaling.saturation([])).toThrow(/no points/)
    expect(() => RolloutScaling.saturation([{ workers: 2, step: 1, update: 0 }, { workers: 2, step: 1, update: 0 }])).toThrow(/appears twice/)
  })
})
