import { Backend } from "@r1flow/backend"
import { Rng } from "@r1flow/core"
import { LogProbs, Transformer } from "@r1flow/model"
import * as tf from "@tensorflow/tfjs"
import { Effect, Schema, type Scope } from "effect"
import { beforeAll, describe, expect, it } from "vitest"
import { Metrics, Sft, Update, UpdateBatch } from "../src/index.js"
import { advantages, advantagesBatch, rows, sftBatch, tinyConfig } from "./model.js"

const run = <A, E>(e: Effect.Effect<A, E, Scope.Scope>) => Effect.runPromise(Effect.scoped(e))
const updateConfig = (c: Record<string, unknown>) => Schema.decodeUnknownSync(Update.Config)(c)
const sftConfig = (c: Record<string, unknown>) => Schema.decodeUnknownSync(Sft.Config)(c)
// Two blocks, so a checkpointed block's input is the previous block's output (a recomputed one in the backward).
const policyOf = (seed: number) => Transformer.init({ ...tinyConfig, nLayers: 2 }, Rng.make(seed, "init"))

beforeAll(async () => {
  await Backend.init()
})

/** Every weight's gradient of `loss`, by HF name, as plain floats. */
const gradients = (policy: Transformer.Model, loss: () => tf.Scalar): Map<string, Float32Array> => {
  const { value, grads } = tf.variableGrads(loss, policy.weights.map((w) => w.variable))
  const out = new Map(policy.weights.map((w) => [w.name, grads[w.variable.name].dataSync() as Float32Array]))
  value.dispose()
  tf.dispose(grads)
  return out
}

const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength)

const expectSameBits = (a: Map<string, Float32Array>, b: Map<string, Float32Array>) => {
  expect([...b.keys()]).toEqual([...a.keys()])
  for (const [name, v] of a) expect(bits(b.get(name)!).equals(bits(v)), name).toBe(true)
}

const weightsOf = (policy: Transformer.Model) => new Map(policy.weights.map((w) => [w.name, w.variable.dataSync() as Float32Array]))

/** Kernels the backend ran for `f`: checkpointing runs each block's forward a second time in the backward. */
const kernelCount = async (f: () => Promise<unknown>) => (await tf.profile(async () => {
  await f()
  return []
})).kernels.length

describe("activation checkpointing in the GRPO update", () => {
  // Group 0 alone shares its prompt (the shared-prefix forward); rows 2…5 span both groups (the plain forward).
  for (const [label, micro] of [["shared prefix", [0, 1, 2, 3]], ["no shared prefix", [2, 3, 4, 5]]] as const) {
    it(`a micro-batch's gradients are bitwise the same with it on (${label})`, async () => {
      const policy = policyOf(7)
      const reference = policyOf(8)
      const batch = advantagesBatch(policy, rows, advantages)
      const config = updateConfig({ loss: { beta: 0.04 } })
      const p = await Effect.runPromise(UpdateBatch.prepare(batch, config))
      const ref = await Effect.runPromise(UpdateBatch.referenceLogProbs(p, reference, 4))
      const normalizer = UpdateBatch.normalizer(p, micro, micro.length)
      const pending: Array<Metrics.Stacked<keyof Metrics.Diagnostics>> = []
      const loss = (checkpoint: boolean) => UpdateBatch.microLoss(p, policy, ref, config.loss, normalizer, pending, checkpoint)(micro)
      const before = tf.memory().numTensors
      const plain = gradients(policy, loss(false))
      const checkpointed = gradients(policy, loss(true))
      // Each pass keeps its stacked diagnostics (one tensor) for the update to read; nothing else survives.
      expect(pending.length).toBe(2)
      expect(tf.memory().numTensors).toBe(before + 2)
      tf.dispose(pending.map((s) => s.values))
      // The loss's dependence on every weight: a zero gradient everywhere would compare equal too.
      for (const [name, g] of plain) expect(g.some((x) => x !== 0), name).toBe(true)
      expectSameBits(plain, checkpointed)
      policy.dispose()
      reference.dispose()
    })
  }

  it("tokenLogProbs's chunked head path gives bitwise the same gradients with it on, shared prefix or not", () => {
    const policy = policyOf(5)
    for (const rowsIds of [[[1, 2, 3, 4, 5], [1, 2, 3, 6, 7]], [[1, 2, 3, 4, 5], [2, 2, 3, 6, 7]]]) {
      const ids = tf.tensor2d(rowsIds, [2, 5], "int32")
      const sharedPrefix = LogProbs.commonPrefixLength(Int32Array.from(rowsIds.flat()), 2, 5)
      const loss = (checkpoint: boolean) => () => {
        const { logprobs, entropy } = LogProbs.tokenLogProbs(policy, ids, { sharedPrefix, checkpoint, chunk: { rows: 3, vocab: 3 } })
        return tf.sum(tf.mul(tf.add(logprobs, entropy), tf.linspace(-1, 1, logprobs.size).reshape(logprobs.shape))) as tf.Scalar
      }
      expectSameBits(gradients(policy, loss(false)), gradients(policy, loss(true)))
      ids.dispose()
    }
    policy.dispose()
  })

  it("the config key reaches the policy's forward: same weights after a step, the blocks rerun", async () => {
    const stepWith = (activationCheckpointing: boolean) => {
      const policy = policyOf(9)
      const batch = advantagesBatch(policy, rows, advantages)
      const config = updateConfig({ activationCheckpointing, loss: { beta: 0.04 }, microBatchSize: 4, optimizer: { learningRate: 0.01 } })
      return run(Effect.gen(function*() {
        const t = yield* Update.make(policy, config, Rng.make(1, "mb"))
        const kernels = yield* Effect.promise(() => kernelCount(() => Effect.runPromise(t.step(batch))))
        const weights = weightsOf(policy)
        policy.dispose()
        return { kernels, weights }
      }))
    }
    expect(updateConfig({}).activationCheckpointing).toBe(false)
    const off = await stepWith(false), on = await stepWith(true)
    expectSameBits(off.weights, on.weights)
    expect(on.kernels).toBeGreaterThan(off.kernels)
  })
})

describe("activation checkpointing in SFT", () => {

  it("the same weights after a step with it on, and the blocks rerun", async () => {
    const stepWith = (activationCheckpointing: boolean) => {
      const policy = policyOf(11)
      return run(Effect.gen(function*() {
        const t = yield* Sft.make(policy, sftConfig({ activationCheckpointing, microBatchSize: 2, optimizer: { learningRate: 0.01 } }), Rng.make(1, "mb"))
        const kernels = yield* Effect.promise(() => kernelCount(() => Effect.runPromise(t.step(sftBatch([[1, 2, 3], [1, 2], [5, 6]], [[7, 1], [2, 3, 4], [6]])))))
        const weights = weightsOf(policy)
        policy.dispose()
        return { kernels, weights }
      }))
    }
    expect(sftConfig({}).activationCheckpointing).toBe(false)
    const off = await stepWith(false), on = await stepWith(true)
    expectSameBits(off.weights, on.weights)
    expect(on.kernels).toBeGreaterThan(off.kernels)
  })
})
