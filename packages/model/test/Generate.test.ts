import * as tf from "@tensorflow/tfjs"
import { Backend } from "@r1flow/backend"
import { Rng } from "@r1flow/core"
import { beforeAll, describe, expect, it } from "vitest"
import { Generate, LogProbs, Transformer } from "../src/index.js"
import { ids2d, randomModel, tiny, tinyQwen3 } from "./helpers.js"

beforeAll(async () => {
  await Backend.init()
})

const prompts = [Int32Array.from([1, 2, 3, 4, 5]), Int32Array.from([7]), Int32Array.from([9, 8, 10])]

/** Greedy decoding by running the whole sequence through `forward` at every step (no cache). */
const greedyByRecomputation = (m: Transformer.Model, prompt: Int32Array, maxNew: number, stopIds: ReadonlyArray<number>) => {
  const seq = Array.from(prompt), out: Array<number> = []
  for (let i = 0; i < maxNew; i++) {
    const last = tf.tidy(() => {
      const logits = Transformer.forward(m, ids2d([seq]))
      return tf.argMax(tf.squeeze(tf.slice(logits, [0, seq.length - 1, 0], [1, 1, -1])), -1).dataSync()[0]
    })
    out.push(last)
    seq.push(last)
    if (stopIds.includes(last)) break
  }
  return out
}

/** Log-probs at temperature τ of each completion token by a full training forward. */
const trainerLogProbs = (m: Transformer.Model, prompt: Int32Array, completion: Int32Array, temperature = 1) =>
  tf.tidy(() => {
    const lp = LogProbs.tokenLogProbs(m, ids2d([[...prompt, ...completion]]), { temperature }).logprobs.dataSync()
    return Array.from(lp.subarray(prompt.length - 1))
  })

describe("Generate.sample", () => {
  it("greedy with the KV cache equals greedy by full recomputation, token for token", async () => {
    for (const [seed, config] of [[1, tiny], [2, tiny], [3, tinyQwen3]] as const) {
      const m = randomModel(config, seed, 0.5)
      const stopIds = [0]
      const r = await Generate.sample(m, { prompts, groupSize: 2, maxNewTokens: 12, temperature: 0, stopIds }, Rng.make(1, "gen"))
      expect(r.completions.length).toBe(6)
      for (let p = 0; p < prompts.length; p++) {
        const ref = greedyByRecomputation(m, prompts[p], 12, stopIds)
        for (let g = 0; g < 2; g++) {
          expect(Array.from(r.completions[p * 2 + g]), `seed ${seed} prompt ${p}`).toEqual(ref)
          expect(r.finishReasons[p * 2 + g]).toBe(ref[ref.length - 1] === 0 ? "stop" : "length")
        }
      }
      m.dispose()
    }
  })

  it("records log-probs equal to the trainer's at the sampling temperature (1, 0.7, and 0.7 with top-k/top-p: unfiltered)", async () => {
    const m = randomModel(tiny, 3, 0.5)
    for (const opts of [{ temperature: 1 }, { temperature: 0.7 }, { temperature: 0.7, topK: 5, topP: 0.9 }]) {
      const r = await Generate.sample(m, { prompts, groupSize: 3, maxNewTokens: 10, stopIds: [0], ...opts }, Rng.make(2, "gen"))
      for (let row = 0; row < r.completions.length; row++) {
        const prompt = prompts[Math.floor(row / 3)]
        const ref = trainerLogProbs(m, prompt, r.completions[row], opts.temperature)
        expect(r.logprobs[row].length).toBe(r.completions[row].length)
        for (let t = 0; t < ref.length; t++) expect(Math.abs(r.logprobs[row][t] - ref[t])).toBeLessThan(1e-4)
      }
    }
    m.dispose()
  })

  it("is reproducible from the seed, stops on stop ids, and respects maxNewTokens and maxSeqLen", async () => {
    const m = randomModel(tiny, 4, 0.5)
    const opts = { prompts, groupSize: 4, maxNewTokens: 8, temperature: 1, stopIds: [3, 5] }
    const a = await Generate.sample(m, opts, Rng.make(9, "gen"))
    const b = await Generate.sample(m, opts, Rng.make(9, "gen"))
    const c = await Generate.sample(m, opts, Rng.make(10, "gen"))
    expect(a).toEqual(b)
    expect(a.completions.map((x) => Array.from(x))).not.toEqual(c.completions.map((x) => Array.from(x)))
    for (let r = 0; r < a.completions.length; r++) {
      const comp = Array.from(a.completions[r])
      expect(comp.length).toBeLessThanOrEqual(8)
      expect(comp.slice(0, -1).some((t) => t === 3 || t === 5)).toBe(false)
      expect(a.finishReasons[r]).toBe(comp[comp.length - 1] === 3 || comp[comp.length - 1] === 5 ? "stop" : "length")
      if (a.finishReasons[r] === "length") expect(comp.length).toBe(8)
    }
    // A prompt of maxSeqLen − 2 tokens gets 2 new tokens at most.
    const long = Int32Array.from({ length: tiny.maxSeqLen - 2 }, (_, i) => 1 + (i % 7))
    const r = await Generate.sample(m, { prompts: [long], groupSize: 1, maxNewTokens: 10, temperature: 1, stopIds: [] }, Rng.make(1, "x"))
    expect(r.completions[0].length).toBe(2)
    expect(r.finishReasons[0]).toBe("length")
    m.dispose()
  })

  it("top-k 1 is greedy", async () => {
    const m = randomModel(tiny, 5, 0.5)
    const greedy = await Generate.sample(m, { prompts, groupSize: 1, maxNewTokens: 6, temperature: 0, stopIds: [] }, Rng.make(1, "g"))
    const k1 = await Generate.sample(m, { prompts, groupSize: 1, maxNewTokens: 6, temperature: 1.3, topK: 1, stopIds: [] }, Rng.make(1, "g"))
    expect(k1.completions).toEqual(greedy.completions)
    m.dispose()
  })
})

describe("tensor memory", () => {
  it("50 steps of generation + a cross-entropy optimizer update do not grow tf.memory().numTensors", async () => {
    const m = randomModel(tiny, 6, 0.3)
    const optimizer = tf.train.adam(1e-3)
    const rng = Rng.make(3, "mem")
    const vars = m.weights.map((w) => w.variable)
    const counts: Array<number> = []
    for (let i = 0; i < 50; i++) {
      const r = await Generate.sample(m, { prompts: prompts.slice(0, 2), groupSize: 2, maxNewTokens: 4, temperature: 1, stopIds: [0] }, rng)
      const seqs = r.completions.map((c, row) => [...prompts[Math.floor(row / 2)], ...c])
      const T = Math.max(...seqs.map((s) => s.length))
      const rows = seqs.map((s) => [...s, ...Array(T - s.length).fill(0)])
      tf.tidy(() => {
        const ids = ids2d(rows)
        optimizer.minimize(() => tf.neg(tf.mean(LogProbs.tokenLogProbs(m, ids).logprobs)) as tf.Scalar, false, vars)
      })
      counts.push(tf.memory().numTensors)
    }
    // The optimizer creates its moment slots on the first step; after that the count is flat.
    expect(new Set(counts.slice(1)).size).toBe(1)
    expect(counts[49]).toBe(counts[0])
    optimizer.dispose()
    m.dispose()
  })
})
