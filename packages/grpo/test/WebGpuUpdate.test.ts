// Generation and one GRPO update of a tiny policy on webgpu (forced, so a software adapter such as Mesa lavapipe
// serves), against the same on the cpu backend: the hot path reads back only with data(), which is all webgpu has.
// Skips, printing why, when no adapter can be had (no libvulkan1 or no ICD).
import { Backend, Read } from "@r1flow/backend"
import { Rng } from "@r1flow/core"
import { Generate, LogProbs, Transformer } from "@r1flow/model"
import * as tf from "@tensorflow/tfjs"
import { Effect, Schema, type Scope } from "effect"
import { mkdirSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { Loss, Metrics, Update } from "../src/index.js"
import { advantages, advantagesBatch, rows, tinyConfig } from "./model.js"

// Mesa compiles every shader for seconds the first time; the cache makes later runs fast.
const cache = fileURLToPath(new URL("../../../node_modules/.cache/mesa-shaders", import.meta.url))
mkdirSync(cache, { recursive: true })
process.env.MESA_SHADER_CACHE_DIR ??= cache

const setup = await Backend.init({ force: "webgpu" }).then(
  () => ({ skip: undefined }),
  (e: unknown) => ({ skip: e instanceof Error ? e.message : String(e) })
)
if (setup.skip !== undefined) console.warn(`webgpu GRPO tests skipped: ${setup.skip}`)

const run = <A, E>(e: Effect.Effect<A, E, Scope.Scope>) => Effect.runPromise(Effect.scoped(e))
const updateConfig = Schema.decodeUnknownSync(Update.Config)({ loss: { beta: 0.04 }, microBatchSize: 4, optimizer: { learningRate: 1e-2 } })
// Both backends build the policy from the same seeded host arrays, so they start from the same bits.
const policyOf = () => Transformer.init(tinyConfig, Rng.make(3, "init"))
const prompts = [Int32Array.from([1, 2, 3]), Int32Array.from([5, 6])]
// The update's batch (host data, on-policy log-probs from the cpu), the same for both backends.
await tf.setBackend("cpu")
const batch = (() => {
  const p = policyOf()
  const b = advantagesBatch(p, rows, advantages)
  p.dispose()
  return b
})()

/** Everything a backend computes here, read back as plain numbers; `tensors`: leaked tensor count. */
const onBackend = async (backend: "cpu" | "webgpu") => {
  await tf.setBackend(backend)
  const before = tf.memory().numTensors
  const policy = policyOf()
  const generated = await Generate.sample(policy, { prompts, groupSize: 2, maxNewTokens: 4, temperature: 0, stopIds: [] }, Rng.make(1, "gen"))
  const { metrics, state } = await run(Effect.gen(function*() {
    const trainer = yield* Update.make(policy, updateConfig, Rng.make(1, "mb"))
    const metrics = yield* trainer.step(batch)
    return { metrics, state: yield* trainer.exportState() }
  }))
  const cb = LogProbs.completionBatch(batch, 0)
  const after = await Read.floats(tf.tidy(() => LogProbs.tokenLogProbs(policy, tf.tensor2d(cb.ids, [cb.batch, cb.time], "int32")).logprobs)) // [B, T−1]
  const weights = await Transformer.toArrays(policy)
  policy.dispose()
  return { generated, metrics, moments: state.optimizer.m, after, weights, tensors: tf.memory().numTensors - before }
}

const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  expect(a.length).toBe(b.length)
  let d = 0
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]))
  return d
}

describe.skipIf(setup.skip !== undefined)("GRPO on webgpu (forced) against cpu", () => {
  // Tolerances: float32 with other summation orders (lavapipe's kernels against tfjs's cpu ones); the
  // differences observed are printed.
  it("greedy generation, one GRPO update (β > 0, two micro-batches) and the optimizer state agree", async () => {
    const gpu = await onBackend("webgpu")
    const cpu = await onBackend("cpu")
    await tf.setBackend("webgpu")
    expect(gpu.generated.completions.map((c) => Array.from(c))).toEqual(cpu.generated.completions.map((c) => Array.from(c)))
    expect(gpu.generated.finishReasons).toEqual(cpu.generated.finishReasons)
    const dLogprob = Math.max(...gpu.generated.logprobs.map((l, i) => maxAbs(l, cpu.generated.logprobs[i])))
    const keys = [Metrics.loss, Metrics.gradNorm, Metrics.kl, Metrics.entropy, Metrics.clipRegion, Metrics.optimizerSteps]
    const dMetrics = Object.fromEntries(keys.map((k) => [k, Math.abs(gpu.metrics[k] - cpu.metrics[k])]))
    const dWeights = Math.max(...[...cpu.weights].map(([name, w]) => maxAbs(gpu.weights.get(name)!, w)))
    const dMoments = Math.max(...cpu.moments.map((m, i) => maxAbs(gpu.moments[i], m)))
    const dAfter = maxAbs(gpu.after, cpu.after)
    console.info(`webgpu − cpu: generation log-probs ${dLogprob.toExponential(2)}, metrics ${JSON.stringify(Object.fromEntries(Object.entries(dMetrics).map(([k, v]) => [k, Number(v.toExponential(2))])))}, ` +
      `weights ${dWeights.toExponential(2)}, Adam m ${dMoments.toExponential(2)}, log-probs after the update ${dAfter.toExponential(2)}`)
    expect(dLogprob).toBeLessThan(1e-4)
    expect(dMetrics[Metrics.optimizerSteps]).toBe(0)
    for (const k of [Metrics.loss, Metrics.kl, Metrics.entropy, Metrics.clipRegion]) expect(dMetrics[k], k).toBeLessThan(1e-4)
    expect(dMetrics[Metrics.gradNorm] / cpu.metrics[Metrics.gradNorm]).toBeLessThan(1e-4)
    expect(dWeights).toBeLessThan(1e-4)
    expect(dMoments).toBeLessThan(1e-5)
    expect(dAfter).toBeLessThan(1e-4)
    expect(gpu.tensors).toBe(0)
    expect(cpu.tensors).toBe(0)
  }, 900_000)

  it("the top-entropy mask (on the device: a sort and a host table of k) keeps the same tokens as on cpu", async () => {
    const config = Schema.decodeUnknownSync(Loss.Config)({ lossType: "dapo", epsilon: 0.2, entropyTopQuantile: 0.4 })
    const loss = (backend: "cpu" | "webgpu") => tf.setBackend(backend).then(() => Read.floats(tf.tidy(() => {
      const logprobs = tf.tensor2d([[-1, -0.5, -2], [-0.3, -1.2, -0.7]])
      const mask = tf.tensor2d([[1, 1, 1], [1, 1, 0]])
      const terms = { logprobs, oldLogprobs: tf.sub(logprobs, 0.1) as tf.Tensor2D, refLogprobs: null, advantages: tf.tensor1d([1, -1]), mask }
      // Entropies 1…5 counted (6 is masked): k = ⌈0.4 · 5⌉ = 2 keeps {5, 4}, whose policy terms alone make the loss.
      return Loss.compute({ ...terms, entropy: tf.tensor2d([[1, 2, 3], [5, 4, 6]]) }, config).loss
    })))
    const [gpu] = await loss("webgpu"), [cpu] = await loss("cpu")
    await tf.setBackend("webgpu")
    expect(Math.abs(gpu - cpu)).toBeLessThan(1e-6)
    expect(cpu).toBeCloseTo(-(Math.exp(0.1) * -1 + Math.exp(0.1) * -1) / 5, 5)
  }, 300_000)
})
