import * as tf from "@tensorflow/tfjs"
import { Backend } from "@r1flow/backend"
import { Batch, Columns } from "@r1flow/core"
import { beforeAll, describe, expect, it } from "vitest"
import { LogProbs, Transformer } from "../src/index.js"
import { ids2d, maxAbsDiff, randomModel, tiny } from "./helpers.js"

beforeAll(async () => {
  await Backend.init()
})

describe("LogProbs.tokenLogProbs", () => {
  it("is log softmax of the logits at the next token, and the entropy of that softmax", () => {
    const m = randomModel(tiny, 3)
    const rows = [[1, 5, 2, 7, 3], [4, 4, 0, 12, 1]]
    const { lp, ent, logits } = tf.tidy(() => {
      const r = LogProbs.tokenLogProbs(m, ids2d(rows))
      return { lp: r.logprobs.arraySync(), ent: r.entropy.arraySync(), logits: Transformer.forward(m, ids2d(rows)).arraySync() }
    })
    expect(lp.length).toBe(2)
    expect(lp[0].length).toBe(4)
    for (let b = 0; b < 2; b++) {
      for (let t = 0; t < 4; t++) {
        const z = logits[b][t], max = Math.max(...z)
        const lse = max + Math.log(z.reduce((s, v) => s + Math.exp(v - max), 0))
        expect(lp[b][t]).toBeCloseTo(z[rows[b][t + 1]] - lse, 4)
        const h = -z.reduce((s, v) => s + Math.exp(v - lse) * (v - lse), 0)
        expect(ent[b][t]).toBeCloseTo(h, 4)
      }
    }
    m.dispose()
  })

  it("is differentiable", () => {
    const m = randomModel(tiny, 4)
    const ids = ids2d([[1, 2, 3, 4]])
    const { value, grads } = tf.variableGrads(() => tf.sum(LogProbs.tokenLogProbs(m, ids).logprobs) as tf.Scalar, m.weights.map((w) => w.variable))
    expect(Object.keys(grads).length).toBe(m.weights.length)
    expect(tf.sum(tf.abs(grads[m.weights[1].variable.name])).dataSync()[0]).toBeGreaterThan(0)
    tf.dispose([value, ids, ...Object.values(grads)])
    m.dispose()
  })
})

describe("LogProbs.completionBatch", () => {
  it("right-pads prompt ++ completion and masks exactly the completion targets", () => {
    const n = 2
    const rollouts = Batch.fromData(Batch.Rollouts, {
      id: Columns.makeUtf8(["a#0", "b#0"]),
      group_id: Columns.makeInt32(new Int32Array([0, 1])),
      prompt: Columns.makeUtf8(["p", "q"]),
      prompt_ids: Columns.int32ListFromRows([[5, 6, 7], [8]]),
      answer: Columns.makeUtf8([null, null]),
      metadata: Columns.makeUtf8([null, null]),
      completion: Columns.makeUtf8(["x", "y"]),
      completion_ids: Columns.int32ListFromRows([[1, 2], [3, 4, 9]]),
      logprobs: Columns.float32ListFromRows([[-0.5, -1.5], [-0.25, -2, -3]]),
      finish_reason: Columns.makeUtf8(["stop", "length"]),
      prompt_length: Columns.makeInt32(new Int32Array([3, 1])),
      completion_length: Columns.makeInt32(new Int32Array([2, 3]))
    })
    const b = LogProbs.completionBatch(rollouts, 0)
    expect(b).toMatchObject({ batch: n, time: 5 })
    expect(Array.from(b.ids)).toEqual([5, 6, 7, 1, 2, /**/ 8, 3, 4, 9, 0])
    expect(Array.from(b.mask)).toEqual([0, 0, 1, 1, /**/ 1, 1, 1, 0])
    expect(maxAbsDiff(b.oldLogprobs, [0, 0, -0.5, -1.5, -0.25, -2, -3, 0])).toBe(0)
  })
})
