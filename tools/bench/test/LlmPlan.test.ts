import * as tf from "@tensorflow/tfjs"
import { Rng } from "@r1flow/core"
import { Lora, Transformer } from "@r1flow/model"
import { Schema } from "effect"
import { beforeAll, describe, expect, it } from "vitest"
import * as LlmPlan from "../src/LlmPlan.js"

// Tiny models of each shape's kind (GQA, biases or not, tied or untied): the formula must count what
// Transformer and Lora actually build.
const tiny = (over: Partial<Transformer.Config>): Transformer.Config => ({
  vocabSize: 37, dModel: 24, nLayers: 3, nHeads: 6, nKvHeads: 2, dFf: 40, maxSeqLen: 16, ropeTheta: 1e4, normEps: 1e-5, tieEmbeddings: true, ...over
})

describe("LlmPlan", () => {
  beforeAll(async () => {
    await tf.setBackend("cpu")
  })

  it.each([
    ["llama-like, tied, no biases", tiny({})],
    ["qwen2-like, q/k/v biases", tiny({ attentionBias: true })],
    ["untied head", tiny({ tieEmbeddings: false, nKvHeads: 3 })]
  ])("parameterCount equals Transformer's for a %s model", (_, c) => {
    const model = Transformer.init(c, Rng.make(1, "test/plan"))
    try {
      expect(LlmPlan.parameterCount(c)).toBe(Transformer.parameterCount(model))
      // And the hand count of the same: E, per layer q, k, v, o, biases, 3 FFN, 2 norms, final norm (+ head).
      const kv = c.nKvHeads * (c.dModel / c.nHeads)
      const bias = c.attentionBias === true ? c.dModel + 2 * kv : 0
      const layer = 2 * c.dModel * c.dModel + 2 * c.dModel * kv + bias + 3 * c.dModel * c.dFf + 2 * c.dModel
      expect(LlmPlan.parameterCount(c)).toBe(c.vocabSize * c.dModel * (c.tieEmbeddings ? 1 : 2) + c.nLayers * layer + c.dModel)
    } finally {
      model.dispose()
    }
  })

  it("adapterCount equals the adapters Lora.attach builds", () => {
    const c = tiny({ attentionBias: true })
    for (const targets of [LlmPlan.LORA.targets, ["q", "v"], ["down"]] as const) {
      const config = Schema.decodeUnknownSync(Lora.Config)({ rank: 4, alpha: 8, targets })
      const model = Lora.attach(Transformer.init(c, Rng.make(1, "test/plan")), config, Rng.make(2, "test/lora"))
      try {
        const built = Transformer.trainableWeights(model).reduce((n, w) => n + w.variable.size, 0)
        expect(LlmPlan.adapterCount(c, 4, targets)).toBe(built)
      } finally {
        model.dispose()
      }
    }
  })

  it("the issue's shapes have their published sizes", () => {
    // Hugging Face model cards: SmolLM2-135M 134.5M, Qwen2.5-0.5B 494M (0.49B), Qwen2.5-1.5B 1.54B.
    expect(LlmPlan.parameterCount(LlmPlan.config("smollm2-135m"))).toBe(134_515_008)
    expect(Math.round(LlmPlan.parameterCount(LlmPlan.config("qwen2.5-0.5b")) / 1e6)).toBe(494)
    expect(Math.round(LlmPlan.parameterCount(LlmPlan.config("qwen2.5-1.5b")) / 1e7)).toBe(154)
  })

  it("every shape is a config Transformer accepts, with room for the training rows and the generations", () => {
    for (const name of Object.keys(LlmPlan.SHAPES) as Array<LlmPlan.ShapeName>) {
      const c = LlmPlan.config(name)
      expect(Transformer.problems(c)).toEqual([])
      expect(c.maxSeqLen).toBeGreaterThanOrEqual(LlmPlan.LENGTHS.genPrompt + LlmPlan.LENGTHS.genNew)
      expect(c.maxSeqLen).toBeGreaterThanOrEqual(LlmPlan.LENGTHS.trainPrompt + LlmPlan.LENGTHS.trainCompletion)
    }
  })

  it("full state is 20 bytes a parameter, LoRA 4 per parameter plus 12 per adapter parameter", () => {
    const full = LlmPlan.plan("qwen2.5-0.5b", "full"), lora = LlmPlan.plan("qwen2.5-0.5b", "lora")
    const n = full.parameters, a = lora.parameters - n
    expect(full.stateBytes).toBe(20 * n)
    expect(lora.trainable).toBe(a)
    expect(lora.stateBytes).toBe(4 * (n + a) + 12 * a)
    expect(full.totalBytes).toBe(full.stateBytes + full.activationBytes + 4 * n + LlmPlan.RUNTIME_BYTES)
  })

  it("fit: 1.5B full does not fit 23 GiB and says by how much; the rest does", () => {
    const machine = 23.5 * 2 ** 30
    const big = LlmPlan.fit(LlmPlan.plan("qwen2.5-1.5b", "full").totalBytes, machine)
    expect(big.fits).toBe(false)
    expect(big.reason).toMatch(/^does not fit: needs ~\d+\.\d GiB, machine has 23\.5 GiB/)
    for (const [s, m] of [["smollm2-135m", "full"], ["qwen2.5-0.5b", "full"], ["qwen2.5-1.5b", "lora"]] as const) {
      expect(LlmPlan.fit(LlmPlan.plan(s, m).totalBytes, machine).fits).toBe(true)
    }
    expect(LlmPlan.fit(85, 100).fits).toBe(true)
    expect(LlmPlan.fit(86, 100).fits).toBe(false)
    expect(() => LlmPlan.fit(1, 0)).toThrow(/memory > 0/)
  })

  it("FLOPs: a full step is 4 forwards, LoRA 3; the forward is 2·matmul parameters plus attention", () => {
    const c = LlmPlan.config("smollm2-135m"), T = 128
    const matmul = 30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536) + 49152 * 576
    expect(LlmPlan.forwardFlops(c, T)).toBe(2 * matmul + 4 * 30 * 576 * T)
    expect(LlmPlan.trainFlops(c, "full")).toBe(4 * LlmPlan.forwardFlops(c, T))
    expect(LlmPlan.trainFlops(c, "lora")).toBe(3 * LlmPlan.forwardFlops(c, T))
  })

  it("an unknown shape is refused by name", () => {
    expect(() => LlmPlan.shapeName("llama-7b")).toThrow(/unknown shape "llama-7b"; known: smollm2-135m/)
  })
})
