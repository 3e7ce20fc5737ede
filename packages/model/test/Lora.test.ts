import * as tf from "@tensorflow/tfjs"
import { Backend } from "@r1flow/backend"
import { Rng } from "@r1flow/core"
import { Effect } from "effect"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Checkpoint, Lora, Safetensors, Transformer } from "../src/index.js"
import { ids2d, randomModel, tiny, tinyQwen3 } from "./helpers.js"

beforeAll(async () => {
  await Backend.init()
})

const dirs: Array<string> = []
const tmp = () => {
  const d = mkdtempSync(path.join(tmpdir(), "r1flow-lora-"))
  dirs.push(d)
  return d
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true })
})

const all: Lora.Config = { rank: 3, alpha: 6, targets: ["q", "k", "v", "o", "gate", "up", "down"] }
const ids = () => ids2d([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]])
const logits = (m: Transformer.Model, x: tf.Tensor2D) => tf.tidy(() => Transformer.forward(m, x).dataSync() as Float32Array)
const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength)

/** A LoRA model whose B matrices are random too (at init B = 0 and the adapters do nothing). */
const trainedLora = (config: Transformer.Config, seed: number, lora: Lora.Config = all): Transformer.Model => {
  const m = Lora.attach(randomModel(config, seed), lora, Rng.make(seed, "lora"))
  const rng = Rng.make(seed, "b")
  for (const w of m.lora!.weights) {
    if (w.name.endsWith("lora_B.weight")) w.variable.assign(tf.tensor(Float32Array.from({ length: w.variable.size }, () => rng.normal() * 0.3), w.variable.shape))
  }
  return m
}

describe("LoRA", () => {
  it("starts at the base (B = 0, A within PEFT's bound) and trains only the adapters", () => {
    const base = randomModel(tiny, 1), x = ids()
    const before = logits(base, x)
    const m = Lora.attach(base, { rank: 4, alpha: 8, targets: ["q", "v", "down"] }, Rng.make(7, "lora"))
    expect(Transformer.trainableWeights(m).map((w) => w.name).slice(0, 3)).toEqual([
      "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
      "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
      "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight"
    ])
    expect(m.lora!.weights).toHaveLength(2 * 3 * tiny.nLayers)
    expect(m.weights.every((w) => !w.variable.trainable)).toBe(true)
    for (const w of m.lora!.weights) {
      const v = w.variable.dataSync()
      if (w.name.endsWith("lora_B.weight")) expect(v.every((e) => e === 0)).toBe(true)
      else {
        const bound = 1 / Math.sqrt(w.variable.shape[0])
        expect(v.every((e) => Math.abs(e) <= bound)).toBe(true)
        expect(Math.max(...v.map(Math.abs))).toBeGreaterThan(bound / 2)
      }
    }
    expect(m.layers[0].adapters?.down?.a.shape).toEqual([tiny.dFf, 4])
    expect(m.layers[0].adapters?.down?.b.shape).toEqual([4, tiny.dModel])
    expect(bits(logits(m, x)).equals(bits(before))).toBe(true)
    // Gradients reach the adapters only, and A's gradient is 0 while B is 0 (dA = xᵀ·dy·Bᵀ).
    const { value, grads } = tf.variableGrads(() => tf.sum(tf.square(Transformer.forward(m, x))) as tf.Scalar)
    expect(Object.keys(grads).sort()).toEqual(m.lora!.weights.map((w) => w.variable.name).sort())
    const bGrad = grads[m.lora!.weights[1].variable.name].dataSync()
    expect(bGrad.some((g) => g !== 0)).toBe(true)
    tf.dispose([value, ...Object.values(grads)])
    x.dispose()
    m.dispose()
  })

  it("draws the same adapters from the same seed and different ones from another", () => {
    const a = Lora.attach(randomModel(tiny, 1), all, Rng.make(3, "lora"))
    const b = Lora.attach(randomModel(tiny, 1), all, Rng.make(3, "lora"))
    const c = Lora.attach(randomModel(tiny, 1), all, Rng.make(4, "lora"))
    const first = (m: Transformer.Model) => bits(m.lora!.weights[0].variable.dataSync() as Float32Array)
    expect(first(a).equals(first(b))).toBe(true)
    expect(first(a).equals(first(c))).toBe(false)
    for (const m of [a, b, c]) m.dispose()
  })

  for (const [label, config] of [["llama", tiny], ["qwen3 options + biases", { ...tinyQwen3, attentionBias: true, tieEmbeddings: true }]] as const) {
    it(`adapters off is the base bitwise; merged equals base + adapter within 1e-5 (${label})`, async () => {
      const x = ids()
      const base = randomModel(config, 2)
      const plain = logits(base, x)
      base.dispose()
      const m = trainedLora(config, 2)
      const adapted = logits(m, x)
      expect(bits(logits(Lora.disabled(m), x)).equals(bits(plain))).toBe(true)
      expect(bits(adapted).equals(bits(plain))).toBe(false)
      const merged = await Lora.merge(m)
      const viaMerge = logits(merged, x)
      let worst = 0
      for (let i = 0; i < adapted.length; i++) worst = Math.max(worst, Math.abs(viaMerge[i] - adapted[i]) / (1 + Math.abs(adapted[i])))
      expect(worst).toBeLessThan(1e-5)
      // An independent check of one merged matrix: W + (α/r)·A·B by hand, HF layout [out, in].
      const w = m.weights.find((w) => w.name === "model.layers.1.mlp.up_proj.weight")!
      const W = w.variable.dataSync(), A = m.layers[1].adapters!.up!.a.dataSync(), B = m.layers[1].adapters!.up!.b.dataSync()
      const [inDim, outDim] = w.variable.shape, r = all.rank, s = all.alpha / all.rank
      const hf = await Lora.mergedArray(m, w)
      for (const [i, o] of [[0, 0], [inDim - 1, outDim - 1], [3, 5]]) {
        let low = 0
        for (let k = 0; k < r; k++) low += A[i * r + k] * B[k * outDim + o]
        expect(hf[o * inDim + i]).toBeCloseTo(W[i * outDim + o] + s * low, 5)
      }
      merged.dispose()
      m.dispose()
      x.dispose()
    })
  }

  it("exports merged as a Hugging Face directory that loads as a plain model", async () => {
    const x = ids(), dir = tmp()
    const m = trainedLora(tiny, 5)
    const adapted = logits(m, x)
    await Effect.runPromise(Checkpoint.exportHf(dir, m))
    const loaded = await Effect.runPromise(Checkpoint.load(dir))
    expect(loaded.lora).toBeUndefined()
    const back = logits(loaded, x)
    for (let i = 0; i < back.length; i++) expect(Math.abs(back[i] - adapted[i])).toBeLessThan(1e-5 * (1 + Math.abs(adapted[i])))
    loaded.dispose()
    m.dispose()
    x.dispose()
  })

  it("writes a PEFT adapter directory (PEFT's names and [r, in] / [out, r] layout) and loads it back exactly", async () => {
    const dir = tmp(), x = ids()
    const lora: Lora.Config = { rank: 2, alpha: 5, targets: ["o", "q", "gate"] }
    const m = trainedLora(tiny, 6, lora)
    await Effect.runPromise(Lora.savePeft(dir, m, { baseModel: "HuggingFaceTB/SmolLM2-135M" }))
    const config = JSON.parse(readFileSync(path.join(dir, Lora.CONFIG_FILE), "utf8"))
    expect(config).toMatchObject({ peft_type: "LORA", task_type: "CAUSAL_LM", r: 2, lora_alpha: 5, target_modules: ["q_proj", "o_proj", "gate_proj"], base_model_name_or_path: "HuggingFaceTB/SmolLM2-135M", bias: "none" })
    const { tensors } = await Effect.runPromise(Safetensors.read(path.join(dir, Lora.WEIGHTS_FILE)))
    expect(Object.keys(tensors)).toHaveLength(2 * 3 * tiny.nLayers)
    const a = tensors["base_model.model.model.layers.1.self_attn.o_proj.lora_A.weight"], held = m.layers[1].adapters!.o!.a // [in, r]
    expect(a.shape).toEqual([2, tiny.dModel])
    const hv = held.dataSync()
    expect((a.data as Float32Array)[1 * tiny.dModel + 7]).toBe(hv[7 * 2 + 1])
    expect(tensors["base_model.model.model.layers.0.mlp.gate_proj.lora_B.weight"].shape).toEqual([tiny.dFf, 2])
    const loaded = await Effect.runPromise(Lora.loadPeft(dir, randomModel(tiny, 6)))
    expect(loaded.lora!.targets).toEqual(["q", "o", "gate"])
    expect(bits(logits(loaded, x)).equals(bits(logits(m, x)))).toBe(true)
    for (let i = 0; i < m.lora!.weights.length; i++) {
      expect(loaded.lora!.weights[i].name).toBe(m.lora!.weights[i].name)
      expect(bits(loaded.lora!.weights[i].variable.dataSync() as Float32Array).equals(bits(m.lora!.weights[i].variable.dataSync() as Float32Array))).toBe(true)
    }
    loaded.dispose()
    m.dispose()
    x.dispose()
  })

  it("refuses PEFT directories it cannot reproduce, naming the key or tensor", async () => {
    const dir = tmp()
    const m = trainedLora(tiny, 8, { rank: 2, alpha: 4, targets: ["q", "v"] })
    await Effect.runPromise(Lora.savePeft(dir, m))
    m.dispose()
    const good = readFileSync(path.join(dir, Lora.CONFIG_FILE), "utf8")
    const failure = async (edit: Record<string, unknown>, base = tiny) => {
      writeFileSync(path.join(dir, Lora.CONFIG_FILE), JSON.stringify({ ...JSON.parse(good), ...edit }))
      const model = randomModel(base, 1)
      const r = await Effect.runPromise(Effect.result(Lora.loadPeft(dir, model)))
      if (r._tag === "Success") r.success.dispose()
      else model.dispose()
      return r._tag === "Failure" ? Checkpoint.describe(r.failure) : "loaded"
    }
    expect(await failure({ use_rslora: true })).toMatch(/adapter_config\.json: key use_rslora: true: rsLoRA/)
    expect(await failure({ use_dora: true })).toMatch(/key use_dora/)
    expect(await failure({ bias: "all" })).toMatch(/key bias/)
    expect(await failure({ target_modules: "q_proj|v_proj" })).toMatch(/key target_modules: .*regex/)
    expect(await failure({ target_modules: ["q_proj", "c_attn"] })).toMatch(/unknown modules c_attn/)
    expect(await failure({ r: 0 })).toMatch(/key r: r must be a positive integer/)
    expect(await failure({ target_modules: ["q_proj", "v_proj", "k_proj"] })).toMatch(/tensor base_model\.model\.model\.layers\.0\.self_attn\.k_proj\.lora_A\.weight: missing/)
    expect(await failure({ target_modules: ["q_proj"] })).toMatch(/v_proj\.lora_A\.weight: not an adapter of this base/)
    expect(await failure({ r: 3 })).toMatch(/q_proj\.lora_A\.weight: shape \[2,16\], the base model needs \[3,16\]/)
    expect(await failure({}, { ...tiny, dModel: 24, nHeads: 4, nKvHeads: 2 })).toMatch(/shape \[2,16\], the base model needs \[2,24\]/)
    expect(await failure({})).toBe("loaded")
  })

  it("refuses to attach twice and leaks no tensors", () => {
    const before = tf.memory().numTensors
    const m = Lora.attach(randomModel(tiny, 1), all, Rng.make(1, "lora"))
    expect(() => Lora.attach(m, all, Rng.make(1, "lora"))).toThrow(/already has adapters/)
    Lora.disabled(m).dispose()
    expect(m.lora!.weights[0].variable.isDisposed).toBe(false)
    m.dispose()
    expect(tf.memory().numTensors).toBe(before)
  })
})
