import * as tf from "@tensorflow/tfjs"
import { Backend } from "@r1flow/backend"
import { Rng } from "@r1flow/core"
import { beforeAll, describe, expect, it } from "vitest"
import { Transformer } from "../src/index.js"
import { ids2d, maxAbsDiff, randomModel, tiny, tinyQwen3 } from "./helpers.js"

beforeAll(async () => {
  await Backend.init()
})

describe("Transformer", () => {
  it("initialises deterministically from the seeded stream", async () => {
    const a = Transformer.init(tiny, Rng.make(7, "init"))
    const b = Transformer.init(tiny, Rng.make(7, "init"))
    const c = Transformer.init(tiny, Rng.make(8, "init"))
    const wa = await Transformer.toArrays(a), wb = await Transformer.toArrays(b), wc = await Transformer.toArrays(c)
    for (const [name, v] of wa) expect(Buffer.from(v.buffer).equals(Buffer.from(wb.get(name)!.buffer))).toBe(true)
    expect(maxAbsDiff(wa.get("model.embed_tokens.weight")!, wc.get("model.embed_tokens.weight")!)).toBeGreaterThan(0)
    expect(a.weights.map((w) => w.name).slice(0, 3)).toEqual(["model.embed_tokens.weight", "model.layers.0.input_layernorm.weight", "model.layers.0.self_attn.q_proj.weight"])
    // Linear weights are held [in, out]; HF layout [out, in] is what weightShapes and checkpoints use.
    expect(a.weights.find((w) => w.name === "model.layers.0.self_attn.k_proj.weight")!.variable.shape).toEqual([16, 8])
    expect(Transformer.weightShapes(tiny).find((w) => w.name === "model.layers.0.self_attn.k_proj.weight")!.shape).toEqual([8, 16])
    expect(Transformer.parameterCount(a)).toBe(Transformer.weightShapes(tiny).reduce((n, w) => n + w.shape.reduce((x, y) => x * y, 1), 0))
    for (const m of [a, b, c]) m.dispose()
  })

  it("rejects a bad config with every problem named", () => {
    expect(() => Transformer.init({ ...tiny, nHeads: 3, nKvHeads: 2 }, Rng.make(1, "x"))).toThrow(/not a multiple of nHeads 3.*nHeads 3 is not a multiple of nKvHeads 2/)
  })

  it("is causal: later tokens do not change earlier logits", () => {
    const m = randomModel(tiny, 1)
    const [a, b] = tf.tidy(() => [
      Transformer.forward(m, ids2d([[1, 2, 3, 4, 5]])).dataSync(),
      Transformer.forward(m, ids2d([[1, 2, 3, 9, 0]])).dataSync()
    ])
    const V = tiny.vocabSize
    expect(maxAbsDiff(a.subarray(0, 3 * V), b.subarray(0, 3 * V))).toBeLessThan(1e-6)
    expect(maxAbsDiff(a.subarray(3 * V), b.subarray(3 * V))).toBeGreaterThan(1e-3)
    m.dispose()
  })

  it("grouped-query attention equals full attention with each kv head repeated (HF repeat_kv)", async () => {
    const gqa = randomModel(tiny, 2)
    const full: Transformer.Config = { ...tiny, nKvHeads: tiny.nHeads }
    const arrays = await Transformer.toArrays(gqa)
    const hd = Transformer.headDim(tiny), G = tiny.nHeads / tiny.nKvHeads
    for (let l = 0; l < tiny.nLayers; l++) {
      for (const p of ["k_proj", "v_proj"]) {
        const name = `model.layers.${l}.self_attn.${p}.weight`
        const w = arrays.get(name)!, out = new Float32Array(tiny.nHeads * hd * tiny.dModel)
        for (let h = 0; h < tiny.nHeads; h++) out.set(w.subarray(Math.floor(h / G) * hd * tiny.dModel, (Math.floor(h / G) + 1) * hd * tiny.dModel), h * hd * tiny.dModel)
        arrays.set(name, out)
      }
    }
    const mha = Transformer.fromArrays(full, arrays)
    const [a, b] = tf.tidy(() => {
      const ids = ids2d([[3, 1, 4, 1, 5, 9], [2, 6, 5, 3, 5, 8]])
      return [Transformer.forward(gqa, ids).dataSync(), Transformer.forward(mha, ids).dataSync()]
    })
    expect(maxAbsDiff(a, b)).toBeLessThan(1e-5)
    gqa.dispose()
    mha.dispose()
  })

  // The q/k norms make the loss more curved: a smaller step keeps the difference's own error (O(h²)) small.
  for (const [label, config, h] of [
    ["tied head, q/k/v biases", { ...tiny, vocabSize: 7, dModel: 8, nHeads: 2, nKvHeads: 1, dFf: 12, tieEmbeddings: true, attentionBias: true }, 1e-2],
    ["head width ≠ dModel/nHeads, q/k norms, Llama 3 rope scaling", { ...tinyQwen3, vocabSize: 7, dModel: 8, nHeads: 2, nKvHeads: 1, dFf: 12 }, 2.5e-3]
  ] as const) it(`gradients match central differences (${label})`, () => {
    const m = randomModel(config, 3, 0.5)
    const ids = ids2d([[1, 2, 3, 4], [6, 5, 0, 2]])
    const proj = tf.randomNormal([2, 4, config.vocabSize], 0, 1, "float32", 11)
    const loss = () => tf.sum(tf.mul(Transformer.forward(m, ids), proj)) as tf.Scalar
    const { grads } = tf.variableGrads(loss, m.weights.map((w) => w.variable))
    const rng = Rng.make(5, "probe")
    let checked = 0
    for (const w of m.weights) {
      const g = grads[w.variable.name].dataSync()
      const values = w.variable.dataSync().slice()
      for (let probe = 0; probe < 3; probe++) {
        const i = rng.nextInt(values.length)
        const at = (delta: number) => {
          const v = values.slice()
          v[i] += delta
          w.variable.assign(tf.tensor(v, w.variable.shape))
          return tf.tidy(() => loss().dataSync()[0])
        }
        const numeric = (at(h) - at(-h)) / (2 * h)
        w.variable.assign(tf.tensor(values, w.variable.shape))
        expect(Math.abs(numeric - g[i]), `${w.name}[${i}]: numeric ${numeric} vs tf.grad ${g[i]}`).toBeLessThan(2e-3 + 2e-2 * Math.abs(g[i]))
        checked++
      }
    }
    expect(checked).toBe(3 * m.weights.length)
    tf.dispose(Object.values(grads))
    tf.dispose([ids, proj])
    m.dispose()
  })

  it("an explicit head width makes q/o [C, H·hd]; q/k norms are [hd] weights after o_proj", () => {
    const shapes = new Map(Transformer.weightShapes(tinyQwen3).map((w) => [w.name, w.shape]))
    expect(shapes.get("model.layers.0.self_attn.q_proj.weight")).toEqual([24, 16])
    expect(shapes.get("model.layers.0.self_attn.k_proj.weight")).toEqual([12, 16])
    expect(shapes.get("model.layers.0.self_attn.o_proj.weight")).toEqual([16, 24])
    expect(shapes.get("model.layers.0.self_attn.q_norm.weight")).toEqual([6])
    const names = [...shapes.keys()]
    expect(names.indexOf("model.layers.0.self_attn.q_norm.weight")).toBe(names.indexOf("model.layers.0.self_attn.o_proj.weight") + 1)
    expect(Transformer.problems({ ...tinyQwen3, headDim: 5 })).toEqual(["head width 5 must be even for rotary embeddings"])
  })

  it("Llama 3 scaling keeps high frequencies, divides low ones by the factor and blends the band between", () => {
    const c: Transformer.Config = { ...tiny, nHeads: 2, nKvHeads: 1, ropeScaling: { ropeType: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 } }
    const f = Transformer.llama3InvFreq(c, c.ropeScaling as Transformer.Llama3Scaling)
    // hd 8: plain frequencies 1, 0.1, 0.01, 0.001 (wavelengths 6.3, 63, 628, 6283 against 64/4 = 16 and 64/1 = 64).
    const smooth = (64 / (2 * Math.PI / 0.1) - 1) / 3
    const want = [1, (1 - smooth) * 0.1 / 8 + smooth * 0.1, 0.01 / 8, 0.001 / 8]
    for (let i = 0; i < 4; i++) expect(f[i] / want[i]).toBeCloseTo(1, 12)
  })

  it("clone and copyWeights copy exactly; the clone is frozen", async () => {
    const a = randomModel(tiny, 4), b = randomModel(tiny, 5)
    const c = await Transformer.clone(a)
    expect(c.weights.every((w) => !w.variable.trainable)).toBe(true)
    Transformer.copyWeights(a, b)
    const wa = await Transformer.toArrays(a), wb = await Transformer.toArrays(b), wc = await Transformer.toArrays(c)
    for (const [name, v] of wa) {
      expect(maxAbsDiff(v, wb.get(name)!)).toBe(0)
      expect(maxAbsDiff(v, wc.get(name)!)).toBe(0)
    }
    for (const m of [a, b, c]) m.dispose()
  })
})
