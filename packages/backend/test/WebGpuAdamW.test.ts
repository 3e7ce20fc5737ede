// The WGSL AdamW kernel against the composite, both on the webgpu backend (forced, so lavapipe serves in CI):
// several steps in a row on odd sizes, with and without decay and a clip scale. Skips, printing why, when no
// adapter can be had.
import * as tf from "@tensorflow/tfjs"
import { describe, expect, it } from "vitest"
import { WebGpuKernels } from "../src/index.js"
import * as WebGpuTest from "./support/webgpu.js"

const skip = await WebGpuTest.open("WGSL AdamW tests")
const { AdamW } = await import("@r1flow/kernels")
const { random, maxRel } = WebGpuTest

/** θ, m, v after `steps` AdamW updates from seeded weights and gradients, with the WGSL kernel or the composite. */
const run = async (n: number, steps: number, decay: number, scale: number, wgsl: boolean): Promise<Array<Float32Array>> => {
  if (!wgsl) WebGpuKernels.uninstall()
  try {
    let p: tf.Tensor = tf.tensor1d(random(n, 1, 2)), m: tf.Tensor = tf.zeros([n]), v: tf.Tensor = tf.zeros([n])
    for (let t = 1; t <= steps; t++) {
      const g = tf.tensor1d(random(n, 10 + t, 0.5))
      const lr = 1e-2
      const next = AdamW.update(p, m, v, g, { beta1: 0.9, beta2: 0.999, c1: 1 - 0.9 ** t, c2: 1 - 0.999 ** t, epsilon: 1e-8, decay: decay === 0 ? 1 : 1 - lr * decay, learningRate: lr, scale })
      tf.dispose([p, m, v, g])
      ;[p, m, v] = next
    }
    const out = await Promise.all([p, m, v].map((t) => t.data() as Promise<Float32Array>))
    tf.dispose([p, m, v])
    return out
  } finally {
    if (!wgsl) WebGpuKernels.install()
  }
}

describe.skipIf(skip !== undefined)("WGSL AdamW on webgpu", () => {
  it("is registered for webgpu, so AdamW.update takes it", () => {
    expect(tf.getBackend()).toBe("webgpu")
    expect(tf.getKernel("R1AdamW", "webgpu")).toBeDefined()
  })

  const cases: Array<[number, number, number]> = [[1, 0, 1], [63, 0.01, 1], [65, 0, 0.37], [100003, 0.1, 0.5]]
  for (const [n, decay, scale] of cases) {
    it(`matches the composite over 3 steps: ${n} elements, decay ${decay}, scale ${scale}, within 1e-6`, async () => {
      const kernel = await run(n, 3, decay, scale, true), composite = await run(n, 3, decay, scale, false)
      kernel.forEach((k, i) => {
        expect(k.some((x) => x !== 0)).toBe(true)
        expect(maxRel(k, composite[i])).toBeLessThan(1e-6)
      })
    })
  }

  it("leaks no tensors", async () => {
    await run(7, 2, 0.01, 1, true)
    const before = tf.memory().numTensors
    await run(7, 2, 0.01, 1, true)
    expect(tf.memory().numTensors).toBe(before)
  })
})
