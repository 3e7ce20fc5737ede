// The WGSL SwiGLU and RoPE kernels against the composites of tfjs ops, both on the webgpu backend (forced, so
// lavapipe serves in CI): values and gradients on random odd shapes. Skips, printing why, when no adapter can be had.
import * as tf from "@tensorflow/tfjs"
import { describe, expect, it } from "vitest"
import { WebGpuKernels } from "../src/index.js"
import * as WebGpuTest from "./support/webgpu.js"

const skip = await WebGpuTest.open("WGSL fused kernel tests")
// Dynamic, as Backend loads it (the boundary rule forbids a static import of a lazily loaded library).
const { Fused } = await import("@r1flow/kernels")

const sizeOf = (shape: Array<number>) => shape.reduce((p, d) => p * d, 1)

/** A seeded random tensor of `shape` (`WebGpuTest.random`). */
const random = (shape: Array<number>, seed: number, s = 1): tf.Tensor => tf.tensor(WebGpuTest.random(sizeOf(shape), seed, s), shape)
const { maxRel } = WebGpuTest

/**
 * `op`'s value and the gradients of `Σ op ⊙ w` (w fixed random: a dy that is not all ones) wrt `inputs`, with the
 * WGSL kernels or (uninstalled) the composites. `make` builds the inputs and any constants the op takes.
 */
const run = async (make: () => { inputs: Array<tf.Tensor>; op: (...xs: Array<tf.Tensor>) => tf.Tensor }, seed: number, wgsl: boolean): Promise<Array<Float32Array>> => {
  if (!wgsl) WebGpuKernels.uninstall()
  try {
    const out = tf.tidy(() => {
      const { inputs, op } = make()
      const y = op(...inputs)
      const w = random(y.shape, seed)
      const { grads } = tf.valueAndGrads((...xs: Array<tf.Tensor>) => tf.sum(tf.mul(op(...xs), w)))(inputs)
      return [y, ...grads]
    })
    const values = await Promise.all(out.map((t) => t.data() as Promise<Float32Array>))
    tf.dispose(out)
    return values
  } finally {
    if (!wgsl) WebGpuKernels.install()
  }
}

/** The largest relative difference of each output (value, then gradients) between the kernels and the composites. */
const compare = async (make: Parameters<typeof run>[0], seed: number): Promise<Array<number>> => {
  const kernel = await run(make, seed, true), composite = await run(make, seed, false)
  for (const k of kernel) expect(k.some((v) => v !== 0)).toBe(true)
  return kernel.map((k, i) => maxRel(k, composite[i]))
}

/** The rotate-half matrix the model multiplies by in the composite: x · R = [−x₂, x₁]. */
const rotation = (hd: number): tf.Tensor2D => {
  const r = new Float32Array(hd * hd), half = hd / 2
  for (let j = 0; j < half; j++) {
    r[(j + half) * hd + j] = -1
    r[j * hd + j + half] = 1
  }
  return tf.tensor2d(r, [hd, hd])
}

const swigluCase = (shape: Array<number>, seed: number) => () =>
  ({ inputs: [random(shape, seed, 4), random(shape, seed + 1, 2)], op: (gate: tf.Tensor, up: tf.Tensor) => Fused.swiglu(gate, up) })

const ropeCase = ([b, t, h, hd]: [number, number, number, number], cosBatch: number, seed: number) => () => {
  const table = [cosBatch, t, 1, hd], rot = rotation(hd)
  const cos = random(table, seed + 1), sin = random(table, seed + 2)
  return { inputs: [random([b, t, h, hd], seed, 3)], op: (x: tf.Tensor) => Fused.rope(x as tf.Tensor4D, cos, sin, rot) }
}

describe.skipIf(skip !== undefined)("WGSL SwiGLU and RoPE on webgpu", () => {
  it("are registered for webgpu, and Fused.swiglu and Fused.rope take them", async () => {
    expect(tf.getBackend()).toBe("webgpu")
    for (const name of ["R1Swiglu", "R1SwigluGrad", "R1Rope", "R1RopeGrad"]) expect(tf.getKernel(name, "webgpu")).toBeDefined()
    // The profile names the kernels run: the fused one alone, not the composite's Sigmoid, Mul, MatMul, ...
    const [gate, up] = swigluCase([3, 7], 1)().inputs
    expect((await tf.profile(() => Fused.swiglu(gate, up))).kernelNames).toEqual(["R1Swiglu"])
    const [x, cos, sin, rot] = [random([2, 5, 3, 6], 3), random([2, 5, 1, 6], 4), random([2, 5, 1, 6], 5), rotation(6)]
    expect((await tf.profile(() => Fused.rope(x as tf.Tensor4D, cos, sin, rot))).kernelNames).toEqual(["R1Rope"])
    tf.dispose([gate, up, x, cos, sin, rot])
  })

  // Sizes below, at and above the 128-thread workgroup, a single element, leading dims.
  const swiglus: Array<Array<number>> = [[1], [3, 7], [2, 5, 63], [13, 65], [128], [65541, 3]]
  swiglus.forEach((shape, i) => {
    it(`SwiGLU matches the composite on [${shape.join(", ")}]: value and dUp within 1e-7, dGate within 1e-6`, async () => {
      const [y, dGate, dUp] = await compare(swigluCase(shape, 10 + i), 20 + i)
      expect(y).toBeLessThan(1e-7)
      expect(dGate).toBeLessThan(1e-6)
      expect(dUp).toBeLessThan(1e-7)
    })
  })

  // More elements than 65535 workgroups of 128 threads hold (lavapipe's limit per dispatch dimension): tfjs folds
  // the dispatch into two dimensions, which every program here shares; the forward alone checks it.
  it("SwiGLU matches the composite on [65537, 129] (a folded dispatch) within 1e-7", async () => {
    const [gate, up] = [tf.randomUniform([65537, 129], -4, 4, "float32", 1), tf.randomUniform([65537, 129], -2, 2, "float32", 2)]
    const forward = async () => {
      const y = Fused.swiglu(gate, up)
      return (await y.data().finally(() => y.dispose())) as Float32Array
    }
    const y = await forward()
    WebGpuKernels.uninstall()
    const yc = await forward().finally(() => WebGpuKernels.install())
    expect(y.at(-1)).not.toBe(0)
    expect(maxRel(y, yc)).toBeLessThan(1e-7)
    tf.dispose([gate, up])
  })

  // hd 2 (halves of one), 6, 64 and 66; T 1 and 5; cos and sin shared by the batch or per sequence.
  const ropes: Array<[[number, number, number, number], number]> = [
    [[1, 1, 1, 2], 1], [[3, 5, 2, 6], 1], [[3, 5, 2, 6], 3], [[2, 1, 3, 64], 2], [[2, 5, 3, 66], 1], [[1, 5, 4, 64], 1], [[2, 5, 1, 66], 2]
  ]
  ropes.forEach(([shape, cb], i) => {
    it(`RoPE matches the composite on [${shape.join(", ")}], cos batch ${cb}: value and dx within 1e-6`, async () => {
      const [y, dx] = await compare(ropeCase(shape, cb, 40 + i), 50 + i)
      expect(y).toBeLessThan(1e-6)
      expect(dx).toBeLessThan(1e-6)
    })
  })

  it("leaks no tensors", async () => {
    const make = () => {
      const s = swigluCase([3, 7], 1)(), r = ropeCase([2, 5, 3, 6], 2, 3)()
      return { inputs: [...s.inputs, ...r.inputs], op: (a: tf.Tensor, b: tf.Tensor, x: tf.Tensor) => tf.add(tf.sum(s.op(a, b)), tf.sum(r.op(x))) }
    }
    await run(make, 1, true)
    const before = tf.memory().numTensors
    await run(make, 1, true)
    expect(tf.memory().numTensors).toBe(before)
  })
})
