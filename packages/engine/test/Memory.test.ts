import { Backend } from "@r1flow/backend"
import { Rng } from "@r1flow/core"
import { Lora, Transformer } from "@r1flow/model"
import * as tf from "@tensorflow/tfjs"
import { Effect, Schema } from "effect"
import { beforeAll, describe, expect, it } from "vitest"
import * as Memory from "../src/Memory.js"
import * as Recipe from "../src/Recipe.js"
import { testRecipe } from "./support/recipes.js"

beforeAll(async () => {
  await Backend.init()
})

const tiny: Transformer.Config = {
  vocabSize: 40, dModel: 16, nLayers: 2, nHeads: 4, nKvHeads: 2, dFf: 24, maxSeqLen: 32, ropeTheta: 10000, normEps: 1e-5, tieEmbeddings: false
}

/** Qwen2.5-0.5B's shape (config.json), for the estimate only: no tensor is made. */
const qwen05b: Transformer.Config = {
  vocabSize: 151936, dModel: 896, nLayers: 24, nHeads: 14, nKvHeads: 2, dFf: 4864, maxSeqLen: 32768, ropeTheta: 1e6, normEps: 1e-6, tieEmbeddings: true, attentionBias: true
}

const recipeWith = (stages: ReadonlyArray<unknown>) => Schema.decodeUnknownSync(Recipe.Recipe)(testRecipe({ stages }))
const grpo = (beta?: number) => ({ stage: "grpo", config: { update: { loss: beta === undefined ? {} : { beta } } } })

describe("Memory.footprint", () => {
  it("counts the parameters from the shapes as the built model holds them, and by hand", () => {
    const model = Transformer.init(tiny, Rng.make(1, "init"))
    expect(Memory.parameters(tiny)).toBe(Transformer.parameterCount(model))
    model.dispose()
    // Llama layout by hand: embedding, per block 2 norms + q, k, v, o + gate, up, down, final norm, untied head.
    const { vocabSize: V, dModel: C, dFf: F, nLayers: L } = tiny
    const hd = C / tiny.nHeads, kv = tiny.nKvHeads * hd
    expect(Memory.parameters(tiny)).toBe(V * C + L * (2 * C + C * C + 2 * C * kv + C * C + 3 * C * F) + C + V * C)
    // Qwen2.5-0.5B: 494,032,768 parameters (its model card's 0.49B), tied head.
    expect(Memory.parameters(qwen05b)).toBe(494_032_768)
  })

  it("counts LoRA's adapters as Lora.attach makes them", () => {
    for (const targets of [["q", "v"], ["q", "k", "v", "o", "gate", "up", "down"]] as const) {
      const lora = { rank: 3, alpha: 6, targets }
      const model = Lora.attach(Transformer.init(tiny, Rng.make(2, "init")), lora, Rng.make(2, "lora"))
      const made = Transformer.trainableWeights(model).reduce((n, w) => n + w.variable.size, 0)
      expect(Memory.adapterParameters(tiny, lora)).toBe(made)
      model.dispose()
    }
  })

  it("holds a reference for a grpo stage with β > 0 only, and none under LoRA", () => {
    const P = Memory.parameters(tiny)
    const lora = { rank: 2, alpha: 2, targets: ["q"] as const }
    expect(Memory.footprint(recipeWith([{ stage: "pretrain", config: {} }]), tiny)).toEqual({ parameters: P, trainable: P, reference: 0 })
    expect(Memory.footprint(recipeWith([grpo()]), tiny)).toEqual({ parameters: P, trainable: P, reference: 0 }) // β defaults to 0
    expect(Memory.footprint(recipeWith([grpo(0)]), tiny)).toEqual({ parameters: P, trainable: P, reference: 0 })
    expect(Memory.footprint(recipeWith([{ stage: "pretrain" }, grpo(0.04)]), tiny)).toEqual({ parameters: P, trainable: P, reference: P })
    expect(Memory.footprint(recipeWith([grpo(0.04)]), tiny, lora)).toEqual({ parameters: P, trainable: 2 * 2 * (16 + 16), reference: 0 })
  })

  it("sends full GRPO on Qwen2.5-0.5B to cpu, and its LoRA run to wasm", () => {
    const lora = { rank: 16, alpha: 32, targets: Lora.ALL_TARGETS }
    const full = Backend.estimate(Memory.footprint(recipeWith([grpo(0.04)]), qwen05b))
    expect(full).toBe(20 * 494_032_768) // weights + reference + gradients + two moments, 4 bytes each
    expect(Backend.choose(full).name).toBe("cpu")
    // Adapters per block: r·(in + out) of q [896→896], k and v [896→128], o [896→896], gate and up [896→4864], down [4864→896].
    const perBlock = 16 * (2 * 1792 + 2 * 1024 + 3 * 5760)
    const withLora = Backend.estimate(Memory.footprint(recipeWith([grpo(0.04)]), qwen05b, lora))
    expect(withLora).toBe(4 * 494_032_768 + 12 * 24 * perBlock)
    expect(Backend.choose(withLora).name).toBe("wasm")
  })
})

describe("Memory.start", () => {
  const MiB = 2 ** 20

  it("sees a tensor that lived and died between two samples; a closed meter no longer counts", () => {
    const meter = Memory.start()
    const base = tf.memory().numBytes
    const first = meter.sample()
    expect(first.tensorPeakOf).toBe("allocations")
    expect(first.peakTensorBytes).toBe(base)
    tf.tidy(() => {
      tf.add(tf.zeros([4 * MiB / 4]), 1) // two 4 MiB tensors, both gone when the tidy ends
    })
    expect(tf.memory().numBytes).toBe(base)
    const peak = meter.sample().peakTensorBytes
    expect(peak).toBeGreaterThanOrEqual(base + 8 * MiB)
    meter.close()
    tf.tidy(() => {
      tf.zeros([16 * MiB / 4])
    })
    expect(meter.sample().peakTensorBytes).toBe(peak)
  })

  it("nested meters keep their own peaks: an inner one does not lower the outer one's, nor see what came before it", async () => {
    const outer = Memory.start()
    const inner0 = tf.memory().numBytes
    tf.tidy(() => {
      tf.zeros([8 * MiB / 4])
    })
    const peaks = await Effect.runPromise(Effect.scoped(Effect.map(Memory.meter, (inner) => inner.sample())))
    expect(peaks.peakTensorBytes).toBe(inner0)
    expect(outer.sample().peakTensorBytes).toBeGreaterThanOrEqual(inner0 + 8 * MiB)
    outer.close()
  })

  it("the RSS peak covers memory touched during the stage, also after a later meter reset the kernel's mark", () => {
    const outer = Memory.start()
    let big: Buffer | null = Buffer.alloc(128 * MiB, 1) // touched: resident
    const rssWithBig = process.memoryUsage.rss()
    expect(big[big.length - 1]).toBe(1)
    big = null
    const inner = Memory.start()
    const p = outer.sample()
    expect(p.peakRssBytes).toBeGreaterThanOrEqual(rssWithBig)
    if (process.platform === "linux") expect(p.rssSince).toBe("stage")
    expect(inner.sample().peakRssBytes).toBeGreaterThanOrEqual(process.memoryUsage.rss())
    inner.close()
    outer.close()
    expect(big).toBeNull()
  })

  it("perfValues names the two perf.jsonl keys", () => {
    expect(Memory.perfValues({ peakRssBytes: 3, peakTensorBytes: 4, rssSince: "stage", tensorPeakOf: "allocations" })).toEqual({ "perf/peak_rss_bytes": 3, "perf/peak_tensor_bytes": 4 })
  })
})
