/** A tiny policy and batch builders for the trainer tests. */
import { Batch, Columns, Rng, Stage } from "@r1flow/core"
import { LogProbs, Transformer } from "@r1flow/model"
import * as tf from "@tensorflow/tfjs"
import { makeData, RecordBatch, Struct } from "apache-arrow"
import { Effect } from "effect"
import { Sft } from "../src/index.js"

export const V = 8

export const tinyConfig: Transformer.Config = {
  vocabSize: V, dModel: 16, nLayers: 1, nHeads: 2, nKvHeads: 1, dFf: 32, maxSeqLen: 16,
  ropeTheta: 10000, normEps: 1e-5, tieEmbeddings: false
}

export const tiny = (seed = 1) => Transformer.init(tinyConfig, Rng.make(seed, "init"))

export interface Row {
  readonly group: number
  readonly prompt: ReadonlyArray<number>
  readonly completion: ReadonlyArray<number>
  readonly reward: number
  readonly finish?: "stop" | "length"
}

/** An advantages batch whose `logprobs` are `model`'s own (on-policy) and whose advantages are `advantages` (or computed by `stage`). */
export const advantagesBatch = (model: Transformer.Model, rows: ReadonlyArray<Row>, advantages: Float32Array) => {
  const n = rows.length
  const base = (logprobs: ReadonlyArray<ReadonlyArray<number>>) =>
    Batch.fromData(Batch.Scored, {
      id: Columns.makeUtf8(rows.map((_, i) => `r${i}`)),
      group_id: Columns.makeInt32(Int32Array.from(rows, (r) => r.group)),
      prompt: Columns.makeUtf8(rows.map((r) => r.prompt.join(" "))),
      prompt_ids: Columns.int32ListFromRows(rows.map((r) => r.prompt)),
      answer: Columns.makeUtf8(rows.map(() => "")),
      metadata: Columns.makeUtf8(rows.map(() => "{}")),
      completion: Columns.makeUtf8(rows.map((r) => r.completion.join(" "))),
      completion_ids: Columns.int32ListFromRows(rows.map((r) => r.completion)),
      logprobs: Columns.float32ListFromRows(logprobs),
      finish_reason: Columns.makeUtf8(rows.map((r) => r.finish ?? "stop")),
      prompt_length: Columns.makeInt32(Int32Array.from(rows, (r) => r.prompt.length)),
      completion_length: Columns.makeInt32(Int32Array.from(rows, (r) => r.completion.length)),
      reward: Columns.makeFloat32(Float32Array.from(rows, (r) => r.reward))
    })
  const draft = base(rows.map((r) => r.completion.map(() => 0)))
  const cb = LogProbs.completionBatch(draft, 0)
  const lp = tf.tidy(() => LogProbs.tokenLogProbs(model, tf.tensor2d(cb.ids, [n, cb.time], "int32")).logprobs.dataSync() as Float32Array)
  const W = cb.time - 1
  const own = rows.map((r, b) => Array.from(lp.subarray(b * W + r.prompt.length - 1, b * W + r.prompt.length - 1 + r.completion.length)))
  return Effect.runSync(Stage.addColumns<Batch.AdvantagesType>("test", base(own), Batch.Advantages, { advantage: Columns.makeFloat32(advantages) }))
}

/** Eight rows in two groups with mixed-length completions. */
export const rows: ReadonlyArray<Row> = [
  { group: 0, prompt: [1, 2, 3], completion: [4, 5], reward: 1 },
  { group: 0, prompt: [1, 2, 3], completion: [6], reward: 0 },
  { group: 0, prompt: [1, 2, 3], completion: [7, 7, 2], reward: 1, finish: "length" },
  { group: 0, prompt: [1, 2, 3], completion: [3, 1], reward: 0 },
  { group: 1, prompt: [5, 6], completion: [2, 2, 2], reward: 0, finish: "length" },
  { group: 1, prompt: [5, 6], completion: [1], reward: 1 },
  { group: 1, prompt: [5, 6], completion: [4, 3], reward: 0 },
  { group: 1, prompt: [5, 6], completion: [6, 5, 4], reward: 1, finish: "length" }
]
export const advantages = Float32Array.from([0.87, -0.87, 0.87, -0.87, -0.87, 0.87, -0.87, 0.87])

export const snapshot = (model: Transformer.Model) => model.weights.map((w) => Float32Array.from(w.variable.dataSync() as Float32Array))
export const maxAbsDiff = (a: ReadonlyArray<Float32Array>, b: ReadonlyArray<Float32Array>) => {
  let d = 0
  a.forEach((x, i) => x.forEach((v, j) => { d = Math.max(d, Math.abs(v - b[i][j])) }))
  return d
}

/** An SFT input batch of prompt and completion token rows. */
export const sftBatch = (prompts: ReadonlyArray<ReadonlyArray<number>>, completions: ReadonlyArray<ReadonlyArray<number>>) =>
  new RecordBatch(Sft.Input, makeData({
    type: new Struct(Sft.Input.fields),
    length: prompts.length,
    nullCount: 0,
    children: [Columns.int32ListFromRows(prompts).data[0], Columns.int32ListFromRows(completions).data[0]]
  }))
