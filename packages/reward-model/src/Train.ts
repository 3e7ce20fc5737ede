/**
 * The Bradley–Terry trainer as an r1flow stage: each tokenized pairs batch is one Adam step on
 * L = −mean log σ(r(x, y_c) − r(x, y_r)); the stage adds `margin`, each pair's r_c − r_r measured before
 * the step (so the column is an honest training-set signal, not fitted to the step it reports).
 * `evaluate` gives the held-out pair accuracy.
 */
import { Field, Float32, Schema as ArrowSchema, type RecordBatch } from "apache-arrow"
import { Read } from "@r1flow/backend"
import { Columns, Stage } from "@r1flow/core"
import * as tf from "@tensorflow/tfjs"
import { Effect } from "effect"
import * as Pairs from "./Pairs.js"
import * as RewardModel from "./RewardModel.js"

/** Tokenized pairs plus `margin` (Float32). */
export const Output = new ArrowSchema([...Pairs.Tokenized.fields, new Field("margin", new Float32(), false)], Pairs.Tokenized.metadata)

/** A trainer: the stage, its step count, last loss, and the optimizer to dispose. */
export interface Trainer {
  readonly stage: Stage.Stage<any, any>
  readonly steps: () => number
  readonly lastLoss: () => number
  readonly dispose: () => void
}

/** A trainer stage over `model` with Adam at `learningRate`. */
export const make = (model: RewardModel.RewardModel, options: { readonly learningRate: number }): Trainer => {
  const optimizer = tf.train.adam(options.learningRate)
  let steps = 0
  let last = NaN
  const step = async (batch: RecordBatch): Promise<Float32Array> => {
    const pairs = Pairs.pairsOf(batch)
    const n = pairs.length
    const r = await RewardModel.score(model, [...pairs.map((p) => [p.prompt, p.chosen] as const), ...pairs.map((p) => [p.prompt, p.rejected] as const)], 2 * n)
    const margins = Float32Array.from({ length: n }, (_, i) => r[i] - r[n + i])
    const value = optimizer.minimize(() => RewardModel.loss(model, pairs), true, model.variables as Array<tf.Variable>)
    last = (await Read.floats(value!))[0]
    steps++
    return margins
  }
  const stage = Stage.make({
    name: "reward-model-train",
    input: Pairs.Tokenized,
    output: Output,
    transform: (batch) =>
      Effect.tryPromise({ try: () => step(batch), catch: (cause) => new Stage.StageError({ stage: "reward-model-train", message: String(cause), cause }) }).pipe(
        Effect.flatMap((margins) => Stage.addColumns("reward-model-train", batch, Output, { margin: Columns.makeFloat32(margins) }))
      )
  })
  return { stage, steps: () => steps, lastLoss: () => last, dispose: () => optimizer.dispose() }
}

/** Held-out pair accuracy of `model` on a tokenized pairs batch. */
export const evaluate = (model: RewardModel.RewardModel, batch: RecordBatch): Promise<number> => RewardModel.accuracy(model, Pairs.pairsOf(batch))
