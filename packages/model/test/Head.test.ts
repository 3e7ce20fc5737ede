import * as tf from "@tensorflow/tfjs"
import { Backend } from "@r1flow/backend"
import { Rng } from "@r1flow/core"
import { beforeAll, describe, expect, it } from "vitest"
import { Head, LogProbs, Transformer } from "../src/index.js"
import { ids2d, maxAbsDiff, randomModel, tiny } from "./helpers.js"

beforeAll(async () => {
  await Backend.init()
})

const randn = (rng: Rng.Stream, shape: Array<number>, std: number): tf.Tensor => {
  const a = new Float32Array(shape.reduce((x, y) => x * y, 1))
  for (let i = 0; i < a.length; i++) a[i] = rng.normal() * std
  return tf.tensor(a, shape)
}

/** The unchunked reference: full logits, logSoftmax, one-hot gather, −Σ p log p. */
const reference = (h: tf.Tensor2D, targets: tf.Tensor1D, w: Head.Weight, tau: number) => {
  const V = w.tied ? w.weight.shape[0] : w.weight.shape[1]
  const logits = w.tied ? tf.matMul(h, w.weight, false, true) : tf.matMul(h, w.weight)
  const logp = tf.logSoftmax(tf.div(logits, tau))
  return {
    logprobs: tf.sum(tf.mul(logp, tf.cast(tf.oneHot(targets, V), "float32")), 1) as tf.Tensor1D,
    entropy: tf.neg(tf.sum(tf.mul(tf.exp(logp), logp), 1)) as tf.Tensor1D
  }
}

const cases = [
  { N: 7, C: 5, V: 37, tau: 0.7, tied: false, rows: 3, vocab: 10 },
  { N: 13, C: 24, V: 1001, tau: 1.3, tied: true, rows: 5, vocab: 97 },
  { N: 13, C: 5, V: 1001, tau: 1, tied: false, rows: 13, vocab: 1000 },
  { N: 7, C: 24, V: 37, tau: 0.5, tied: true, rows: 1, vocab: 37 }
]

describe("Head.logProbs", () => {
  for (const k of cases) {
    it(`equals the unchunked head, values and gradients (N=${k.N}, C=${k.C}, V=${k.V}, τ=${k.tau}, ${k.tied ? "tied" : "untied"}, chunks ${k.rows}×${k.vocab})`, () => {
      const rng = Rng.make(k.N * 1000 + k.V, "head-test")
      const h = randn(rng, [k.N, k.C], 1) as tf.Tensor2D
      const W = randn(rng, k.tied ? [k.V, k.C] : [k.C, k.V], 0.8) as tf.Tensor2D
      const t = tf.tensor1d(Array.from({ length: k.N }, () => rng.nextInt(k.V)), "int32")
      // different weights per position for both outputs, so a wrong per-row gradient shows
      const a = randn(rng, [k.N], 1), b = randn(rng, [k.N], 1)
      const before = tf.memory().numTensors
      const run = (f: (h: tf.Tensor2D, W: tf.Tensor2D) => { logprobs: tf.Tensor1D; entropy: tf.Tensor1D }) =>
        tf.tidy(() => {
          const r = f(h, W)
          const g = tf.grads((x: tf.Tensor, y: tf.Tensor) => {
            const q = f(x as tf.Tensor2D, y as tf.Tensor2D)
            return tf.add(tf.sum(tf.mul(q.logprobs, a)), tf.sum(tf.mul(q.entropy, b)))
          })([h, W])
          return [r.logprobs.dataSync(), r.entropy.dataSync(), g[0].dataSync(), g[1].dataSync()] as const
        })
      const got = run((x, y) => Head.logProbs(x, t, { weight: y, tied: k.tied }, { temperature: k.tau, rows: k.rows, vocab: k.vocab }))
      const want = run((x, y) => reference(x, t, { weight: y, tied: k.tied }, k.tau))
      expect(tf.memory().numTensors).toBe(before)
      for (let i = 0; i < 4; i++) {
        expect(got[i].length).toBe(want[i].length)
        expect(maxAbsDiff(got[i], want[i])).toBeLessThan(1e-5)
      }
      // the reference entropy is nonzero and varies, so the check above compares something
      expect(Math.max(...want[1]) - Math.min(...want[1])).toBeGreaterThan(1e-3)
      tf.dispose([h, W, t, a, b])
    })
  }

  it("keeps its peak live bytes, forward and backward, well below the full logits (tf.profile's byte snapshots)", async () => {
    const N = 64, C = 8, V = 20011, full = N * V * 4 // 5.1 MB of logits
    const rng = Rng.make(9, "head-peak")
    const h = randn(rng, [N, C], 1) as tf.Tensor2D, W = randn(rng, [C, V], 0.5) as tf.Tensor2D
    const t = tf.tensor1d(Array.from({ length: N }, () => rng.nextInt(V)), "int32")
    // peak of engine.numBytes over every kernel of forward + backward, less what was live before
    const peak = async (f: (x: tf.Tensor2D, y: tf.Tensor2D) => { logprobs: tf.Tensor1D; entropy: tf.Tensor1D }) => {
      const start = tf.memory().numBytes
      const info = await tf.profile(() => {
        const g = tf.grads((x: tf.Tensor, y: tf.Tensor) => {
          const q = f(x as tf.Tensor2D, y as tf.Tensor2D)
          return tf.add(tf.sum(q.logprobs), tf.sum(q.entropy))
        })([h, W])
        tf.dispose(g)
      })
      return info.peakBytes - start
    }
    const chunked = await peak((x, y) => Head.logProbs(x, t, { weight: y, tied: false }, { rows: 16, vocab: 1024 }))
    const whole = await peak((x, y) => reference(x, t, { weight: y, tied: false }, 1))
    // the measurement sees the logits where they exist whole…
    expect(whole).toBeGreaterThan(full)
    // …and the chunked path stays under the logits' size: dW [C, V] (0.64 MB, twice while summing row chunks) + chunks
    expect(chunked).toBeLessThan(full / 2)
    tf.dispose([h, W, t])
  })

  it("takes one chunk when [N, V] fits the budget and splits V above it", () => {
    expect(Head.chunkSizes(64, 512)).toEqual({ rows: 64, vocab: 512 })
    expect(Head.chunkSizes(4096, 151936)).toEqual({ rows: 512, vocab: 8192 })
    expect(Head.chunkSizes(10, 100, { budgetBytes: 400 })).toEqual({ rows: 1, vocab: 100 })
    expect(() => Head.chunkSizes(10, 100, { rows: 0 })).toThrow(/rows/)
  })

  it("rejects a head weight of the wrong width and non-int32 targets", () => {
    tf.tidy(() => {
      const h = tf.zeros([3, 4]) as tf.Tensor2D
      expect(() => Head.logProbs(h, tf.tensor1d([0, 1, 2], "int32"), { weight: tf.zeros([5, 9]) as tf.Tensor2D, tied: false })).toThrow(/4 channels/)
      expect(() => Head.logProbs(h, tf.tensor1d([0, 1, 2], "float32"), { weight: tf.zeros([4, 9]) as tf.Tensor2D, tied: false })).toThrow(/int32/)
    })
  })
})

describe("LogProbs.tokenLogProbs chunked", () => {
  const rows = [[1, 5, 2, 7, 3, 9, 4], [1, 5, 2, 0, 12, 1, 6], [1, 5, 2, 11, 8, 3, 3]]
  for (const config of [tiny, { ...tiny, tieEmbeddings: true }]) {
    for (const sharedPrefix of [0, 1, 3, 6]) {
      it(`equals the unchunked path with gradients of every weight (${config.tieEmbeddings ? "tied" : "untied"}, sharedPrefix ${sharedPrefix})`, () => {
        const m = randomModel(config, 11)
        // rows sharing 3 tokens, or 6 for the case whose prefix covers all but the last input
        const ids = ids2d(sharedPrefix <= 3 ? rows : rows.map((r, i) => [...rows[0].slice(0, 6), r[6] + i]))
        const rng = Rng.make(5, "head-weights")
        const a = randn(rng, [3, 6], 1), b = randn(rng, [3, 6], 1)
        const vars = m.weights.map((w) => w.variable)
        const run = (options: LogProbs.Options) =>
          tf.tidy(() => {
            const r = LogProbs.tokenLogProbs(m, ids, options)
            const { grads } = tf.variableGrads(() => {
              const q = LogProbs.tokenLogProbs(m, ids, options)
              return tf.add(tf.sum(tf.mul(q.logprobs, a)), tf.sum(tf.mul(q.entropy, b))) as tf.Scalar
            }, vars)
            return [r.logprobs.dataSync(), r.entropy.dataSync(), ...vars.map((v) => grads[v.name].dataSync())]
          })
        const before = tf.memory().numTensors
        const got = run({ temperature: 0.8, sharedPrefix, chunk: { rows: 4, vocab: 5 } })
        const want = run({ temperature: 0.8, sharedPrefix })
        expect(tf.memory().numTensors).toBe(before)
        expect(got.length).toBe(2 + vars.length)
        for (let i = 0; i < got.length; i++) expect(maxAbsDiff(got[i], want[i])).toBeLessThan(1e-5)
        tf.dispose([ids, a, b])
        m.dispose()
      })
    }
  }
})

describe("LogProbs.tokenLogProbs budget rule", () => {
  it("goes through the head once the full log-probs exceed fullBudgetBytes, with the same results", () => {
    const m = randomModel(tiny, 12)
    const ids = ids2d([[1, 5, 2, 7, 3], [1, 5, 0, 12, 1]])
    const [chunked, whole] = tf.tidy(() => [{ fullBudgetBytes: 0 }, {}].map((o) => {
      const r = LogProbs.tokenLogProbs(m, ids, { temperature: 1.2, sharedPrefix: 2, ...o })
      return [...r.logprobs.dataSync(), ...r.entropy.dataSync()]
    }))
    expect(chunked.length).toBe(16)
    expect(maxAbsDiff(chunked, whole)).toBeLessThan(1e-5)
    ids.dispose()
    m.dispose()
  })
})

describe("Transformer.step with a tied head and no prepared head", () => {
  it("gives the logits of the transposed copy, without making it", () => {
    const m = randomModel({ ...tiny, tieEmbeddings: true }, 21)
    const ids = ids2d([[1, 5, 2, 7], [4, 4, 0, 12]])
    const positions = Int32Array.from([0, 1, 2, 3, 0, 1, 2, 3]), valid = new Uint8Array(8).fill(1)
    const head = Transformer.outputHead(m)
    const [inPlace, copied, reference] = tf.tidy(() => {
      const a = Transformer.step(m, ids, positions, valid, undefined)
      const b = Transformer.step(m, ids, positions, valid, undefined, head)
      // independent: the last position of the full forward
      const full = tf.slice(Transformer.forward(m, ids), [0, 3, 0], [2, 1, tiny.vocabSize])
      return [a.logits.dataSync(), b.logits.dataSync(), full.dataSync()]
    })
    expect(inPlace.length).toBe(2 * tiny.vocabSize)
    expect(maxAbsDiff(inPlace, copied)).toBeLessThan(1e-5)
    expect(maxAbsDiff(inPlace, reference)).toBeLessThan(1e-4)
    tf.dispose([head, ids])
    m.dispose()
  })
})
