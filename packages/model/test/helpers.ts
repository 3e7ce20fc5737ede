import * as tf from "@tensorflow/tfjs"
import { Rng } from "@r1flow/core"
import { Transformer } from "../src/index.js"

/** A tiny config for fast tests: grouped-query (4 heads, 2 kv heads), untied head. */
export const tiny: Transformer.Config = {
  vocabSize: 13,
  dModel: 16,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  dFf: 24,
  maxSeqLen: 32,
  ropeTheta: 10000,
  normEps: 1e-5,
  tieEmbeddings: false
}

/**
 * `tiny` with every option the HF families add: an explicit head width (4 heads × 6 ≠ dModel 16), Qwen3's
 * per-head q/k norms and Llama 3's rope scaling (not one real family, but each path at once).
 */
export const tinyQwen3: Transformer.Config = {
  ...tiny,
  headDim: 6,
  qkNorm: true,
  ropeScaling: { ropeType: "llama3", factor: 4, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 16 }
}

/** Weights with a larger spread than `init` (so logits are far from uniform and bugs show). */
export const randomModel = (config: Transformer.Config, seed: number, std = 0.3): Transformer.Model => {
  const rng = Rng.make(seed, "test-weights")
  const arrays = new Map<string, Float32Array>()
  for (const { name, shape } of Transformer.weightShapes(config)) {
    const a = new Float32Array(shape.reduce((x, y) => x * y, 1))
    for (let i = 0; i < a.length; i++) a[i] = (name.endsWith("norm.weight") ? 1 : 0) + rng.normal() * std
    arrays.set(name, a)
  }
  return Transformer.fromArrays(config, arrays)
}

export const ids2d = (rows: ReadonlyArray<ReadonlyArray<number>>): tf.Tensor2D => tf.tensor2d(rows.map((r) => [...r]), undefined, "int32")

export const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]))
  return m
}
