import * as tf from "@tensorflow/tfjs"
import { Effect, Exit, Schema } from "effect"
import { describe, expect, it } from "vitest"
import { Guard, Optimizer, Train } from "../src/index.js"

const setup = () => {
  const w = tf.variable(tf.tensor2d([[1, 2]]), true)
  const optimizer = Optimizer.make([{ name: "w", variable: w }], Schema.decodeUnknownSync(Optimizer.Config)({ learningRate: 0.1 }))
  const guard = Guard.make(Schema.decodeUnknownSync(Guard.Config)({}))
  const loss: Train.MicroLoss = () => tf.sum(tf.square(w))
  return { w, optimizer, guard, loss }
}

describe("Train.optimizerStep", () => {
  it("sums the micro-batches' losses and gradients into one step", async () => {
    const { optimizer, guard, loss } = setup()
    const r = await Effect.runPromise(Train.optimizerStep(optimizer, guard, 0, [loss, loss]))
    expect(r.applied).toBe(true)
    expect(r.loss).toBeCloseTo(10, 5) // 2 · (1² + 2²)
    expect(r.gradNorm).toBeCloseTo(2 * Math.hypot(2, 4), 5) // Σ_k 2w
  })

  it("a micro-loss that throws leaks none of the sums or losses made before it, and leaves the weights", async () => {
    const { w, optimizer, guard, loss } = setup()
    const before = tf.memory().numTensors
    const weights = w.arraySync()
    const heapExhausted: Train.MicroLoss = () => {
      throw new Error("wasm heap exhausted")
    }
    const exit = await Effect.runPromiseExit(Train.optimizerStep(optimizer, guard, 0, [loss, loss, heapExhausted]))
    expect(Exit.isFailure(exit)).toBe(true)
    expect(tf.memory().numTensors).toBe(before)
    expect(w.arraySync()).toEqual(weights)
  })
})
