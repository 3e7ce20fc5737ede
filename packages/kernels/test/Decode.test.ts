import * as tf from "@tensorflow/tfjs"
import { describe, expect, it } from "vitest"
import { Decode, Kernels } from "../src/index.js"
import { backends, lcg, native, relErr, useNativeKernels } from "./helpers.js"

describe.skipIf(!native.ok).each(backends)("native decode attention against the composite (%s)", (backend) => {
  useNativeKernels(backend)

    it("matches on random shapes: rows out of order, padded prompts, several query rows, sliced inputs", () => {
    expect(Kernels.installed(backend)?.kernels).toContain(Decode.KERNEL)
    const rand = lcg(3)
    for (let c = 0; c < 24; c++) {
      const B = 1 + Math.floor(rand() * 9), H = 1 + Math.floor(rand() * 3), Q = 1 + Math.floor(rand() * 3)
      const D = [1, 7, 16, 32, 33, 64][Math.floor(rand() * 6)], P = 1 + Math.floor(rand() * 3)
      const Sp = Math.floor(rand() * 12), S = 1 + Math.floor(rand() * 20)
      const sliced = rand() < 0.5
      const before = tf.memory().numTensors
      const make = () => {
        const r = (shape: Array<number>, seed: number) =>
          sliced ? tf.slice(tf.randomNormal([shape[0] + 1, ...shape.slice(1)], 0, 1, "float32", seed), [1, ...shape.slice(1).map(() => 0)], shape)
            : tf.randomNormal(shape, 0, 1, "float32", seed)
        const bias = (shape: Array<number>, seed: number) => tf.tidy(() => tf.mul(tf.cast(tf.less(tf.randomUniform(shape, 0, 1, "float32", seed), 0.2), "float32"), -1e9))
        return {
          q: r([B, H, Q, D], c * 10 + 1) as tf.Tensor4D,
          promptK: r([P, H, Sp, D], c * 10 + 2) as tf.Tensor4D,
          promptV: r([P, H, Sp, D], c * 10 + 3) as tf.Tensor4D,
          promptOf: tf.tensor1d(Array.from({ length: B }, (_, b) => (b * 7 + c) % P), "int32"),
          promptBias: bias([B, 1, 1, Sp], c * 10 + 4) as tf.Tensor4D,
          k: r([B, H, S, D], c * 10 + 5) as tf.Tensor4D,
          v: r([B, H, S, D], c * 10 + 6) as tf.Tensor4D,
          // The last own key stays visible so no row is fully masked.
          mask: tf.concat([bias([B, 1, Q, S - 1], c * 10 + 7), tf.zeros([B, 1, Q, 1])], 3) as tf.Tensor4D
        }
      }
      let ours: Float32Array = new Float32Array(0), ref: Float32Array = new Float32Array(0)
      tf.tidy(() => {
        const x = make()
        ours = Decode.attend(x).dataSync() as Float32Array
        ref = Decode.composite(x).dataSync() as Float32Array
      })
      expect(relErr(ours, ref), `case ${c}: B=${B} H=${H} Q=${Q} D=${D} P=${P} Sp=${Sp} S=${S} sliced=${sliced}`).toBeLessThan(1e-5)
      expect(tf.memory().numTensors).toBe(before)
    }
  })

  it("writes a preallocated cache in place, and attends over its filled slots only", () => {
    const [B, H, C, D] = [3, 2, 7, 5]
    const cache = tf.zeros([B, H, C, D]) as tf.Tensor4D
    const a = tf.randomNormal([B, H, 2, D], 0, 1, "float32", 1) as tf.Tensor4D
    const b = tf.slice(tf.randomNormal([B, H, 3, D], 0, 1, "float32", 2), [0, 0, 2, 0], [B, H, 1, D]) as tf.Tensor4D
    Decode.write(cache, a, 0)
    Decode.write(cache, b, 2)
    const expected = tf.concat([a, b, tf.zeros([B, H, C - 3, D])], 2)
    expect(Array.from(cache.dataSync())).toEqual(Array.from(expected.dataSync()))
    expect(() => Decode.write(cache, a, 6)).toThrow(/does not fit/)
    // Attention over the 3 filled slots of the 7 equals attention over exactly those 3.
    const x = {
      q: tf.randomNormal([B, H, 2, D], 0, 1, "float32", 3) as tf.Tensor4D,
      promptK: tf.randomNormal([2, H, 4, D], 0, 1, "float32", 4) as tf.Tensor4D,
      promptV: tf.randomNormal([2, H, 4, D], 0, 1, "float32", 5) as tf.Tensor4D,
      promptOf: tf.tensor1d([1, 0, 1], "int32"),
      promptBias: tf.zeros([B, 1, 1, 4]) as tf.Tensor4D,
      mask: tf.zeros([B, 1, 2, 3]) as tf.Tensor4D
    }
    const filled = tf.slice(cache, [0, 0, 0, 0], [B, H, 3, D]) as tf.Tensor4D
    const ours = Decode.attend({ ...x, k: cache, v: cache }).dataSync()
    const ref = Decode.composite({ ...x, k: filled, v: filled }).dataSync()
    expect(relErr(ours, ref)).toBeLessThan(1e-5)
    tf.dispose([cache, a, b, expected, filled, ...Object.values(x)])
  })

  it("refuses a row whose prompt index is out of range", () => {
    const x = {
      q: tf.zeros([2, 1, 1, 4]) as tf.Tensor4D, promptK: tf.zeros([1, 1, 3, 4]) as tf.Tensor4D, promptV: tf.zeros([1, 1, 3, 4]) as tf.Tensor4D,
      promptOf: tf.tensor1d([0, 1], "int32"), promptBias: tf.zeros([2, 1, 1, 3]) as tf.Tensor4D,
      k: tf.zeros([2, 1, 2, 4]) as tf.Tensor4D, v: tf.zeros([2, 1, 2, 4]) as tf.Tensor4D, mask: tf.zeros([2, 1, 1, 2]) as tf.Tensor4D
    }
    expect(() => Decode.attend(x)).toThrow(/prompt index is out of range/)
    tf.dispose(Object.values(x))
  })
})
