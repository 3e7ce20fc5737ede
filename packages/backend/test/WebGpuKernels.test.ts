// The WGSL RMSNorm kernels against the composite of tfjs ops, both on the webgpu backend (forced, so lavapipe
// serves in CI): values and gradients on random odd shapes. Skips, printing why, when no adapter can be had.
import * as tf from "@tensorflow/tfjs"
import { describe, expect, it } from "vitest"
import { WebGpuKernels } from "../src/index.js"
import * as WebGpuTest from "./support/webgpu.js"

const skip = await WebGpuTest.open("WGSL kernel tests")
// Dynamic, as Backend loads it (the boundary rule forbids a static import of a lazily loaded library).
const { Fused } = await import("@r1flow/kernels")
const { random, maxRel } = WebGpuTest

/** y, dx, dg of `Σ y ⊙ w` (w fixed random: a dy that is not all ones), with the WGSL kernels or the composite. */
const run = async (shape: Array<number>, eps: number, seed: number, wgsl: boolean): Promise<Array<Float32Array>> => {
  const n = shape.reduce((p, d) => p * d, 1), c = shape[shape.length - 1]
  if (!wgsl) WebGpuKernels.uninstall()
  try {
    const out = tf.tidy(() => {
      const x = tf.tensor(random(n, seed, 3), shape), g = tf.tensor1d(random(c, seed + 1)), w = tf.tensor(random(n, seed + 2), shape)
      const { value, grads } = tf.valueAndGrads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(Fused.rmsNorm(a, b, eps), w)))([x, g])
      return [Fused.rmsNorm(x, g, eps), value, ...grads]
    })
    const values = await Promise.all(out.map((t) => t.data() as Promise<Float32Array>))
    tf.dispose(out)
    return values
  } finally {
    if (!wgsl) WebGpuKernels.install()
  }
}

describe.skipIf(skip !== undefined)("WGSL RMSNorm on webgpu", () => {
  it("is registered for webgpu, so Fused.rmsNorm takes it", () => {
    expect(tf.getBackend()).toBe("webgpu")
    expect(tf.getKernel("R1RmsNorm", "webgpu")).toBeDefined()
    expect(tf.getKernel("R1RmsNormGrad", "webgpu")).toBeDefined()
  })

  // Odd widths (below, at and above the 64-thread workgroup), one row, leading dims, a width of 1, and more rows
  // than one dispatch dimension holds (65535 workgroups).
  const cases: Array<[Array<number>, number]> = [[[1, 1], 1e-6], [[3, 7], 1e-5], [[2, 5, 63], 1e-6], [[13, 65], 1e-5], [[4, 3, 130], 1e-6], [[37], 1e-5], [[65541, 3], 1e-6]]
  cases.forEach(([shape, eps], i) => {
    it(`matches the composite (values and gradients) on [${shape.join(", ")}] within 1e-5`, async () => {
      const [y, loss, dx, dg] = await run(shape, eps, 10 + i, true)
      const [yc, lossc, dxc, dgc] = await run(shape, eps, 10 + i, false)
      expect(maxRel(y, yc)).toBeLessThan(1e-5)
      expect(maxRel(loss, lossc)).toBeLessThan(1e-5)
      expect(maxRel(dx, dxc)).toBeLessThan(1e-5)
      expect(maxRel(dg, dgc)).toBeLessThan(1e-5)
      expect(dx.some((v) => v !== 0) && dg.some((v) => v !== 0)).toBe(true)
    })
  })

  it("leaks no tensors", async () => {
    await run([3, 7], 1e-6, 1, true)
    const before = tf.memory().numTensors
    await run([3, 7], 1e-6, 1, true)
    expect(tf.memory().numTensors).toBe(before)
  })
})
