// The webgpu backend, forced (so a software adapter such as Mesa lavapipe serves): set-up, agreement with the cpu
// backend, device errors as failures. Skips, printing why, when no adapter can be had (no libvulkan1 or no ICD).
import * as tf from "@tensorflow/tfjs"
import { mkdirSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { Backend, WebGpu } from "../src/index.js"

// Mesa compiles every shader for seconds the first time; the cache makes later runs fast.
const cache = fileURLToPath(new URL("../../../node_modules/.cache/mesa-shaders", import.meta.url))
mkdirSync(cache, { recursive: true })
process.env.MESA_SHADER_CACHE_DIR ??= cache

const setup = await Backend.init({ force: "webgpu" }).then(
  (info) => ({ info, skip: undefined }),
  (e: unknown) => ({ info: undefined, skip: e instanceof Error ? e.message : String(e) })
)
if (setup.skip !== undefined) console.warn(`webgpu tests skipped: ${setup.skip}`)

/** Runs `f` on `backend`, reads the result asynchronously (sync reads throw on webgpu), returns to webgpu. */
const on = async (backend: "cpu" | "webgpu", f: () => tf.Tensor | Array<tf.Tensor>): Promise<Array<Float32Array>> => {
  await tf.setBackend(backend)
  try {
    const out = tf.tidy(f)
    const list = Array.isArray(out) ? out : [out]
    const values = await Promise.all(list.map((t) => t.data() as Promise<Float32Array>))
    tf.dispose(list)
    return values
  } finally {
    await tf.setBackend("webgpu")
  }
}

// Deterministic inputs made in JS, so both backends get the same bits.
const random = (n: number, seed: number): Float32Array => {
  let s = seed >>> 0
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    out[i] = s / 2 ** 32 * 2 - 1
  }
  return out
}

/** max |a − b| / (1 + |b|): absolute near zero, relative for large values. */
const maxRel = (a: Float32Array, b: Float32Array): number => {
  expect(a.length).toBe(b.length)
  return a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]) / (1 + Math.abs(b[i]))), 0)
}

describe.skipIf(setup.skip !== undefined)("webgpu backend (forced)", () => {
  it("initialises, records the adapter and turns the cpu forwarding off", () => {
    const info = setup.info!
    expect(info).toMatchObject({ name: "webgpu", tried: [{ name: "webgpu", ok: true }] })
    expect(info.reason).toMatch(/forced by options\.force \(Dawn on /)
    expect(tf.getBackend()).toBe("webgpu")
    expect(tf.env().getBool("WEBGPU_CPU_FORWARD")).toBe(false)
    const adapter = info.adapter!
    expect(adapter.vendor.length + adapter.architecture.length + adapter.description.length).toBeGreaterThan(0)
    expect(adapter.software).toBe(WebGpu.isSoftware(Backend.gpu()!.info))
    console.info(`webgpu adapter: ${WebGpu.label(adapter)}`)
  })

  // Tolerances: float32 with a different summation order; observed on lavapipe ~1e-7 relative.
  it("matMul (odd shapes, transposed) agrees with the cpu backend within 1e-5 relative", async () => {
    const a = random(33 * 47, 1), b = random(29 * 47, 2)
    const f = () => tf.matMul(tf.tensor2d(a, [33, 47]), tf.tensor2d(b, [29, 47]), false, true)
    const [gpu] = await on("webgpu", f)
    const [cpu] = await on("cpu", f)
    expect(maxRel(gpu, cpu)).toBeLessThan(1e-5)
  })

  it("softmax and logSoftmax agree with the cpu backend within 1e-6", async () => {
    const x = random(7 * 131, 3).map((v) => v * 20)
    const f = () => [tf.softmax(tf.tensor2d(x, [7, 131])), tf.logSoftmax(tf.tensor2d(x, [7, 131]))]
    const gpu = await on("webgpu", f)
    const cpu = await on("cpu", f)
    expect(maxRel(gpu[0], cpu[0])).toBeLessThan(1e-6)
    expect(maxRel(gpu[1], cpu[1])).toBeLessThan(1e-6)
  })

  it("gradients of a small MLP with a softmax cross-entropy agree with the cpu backend within 1e-5", async () => {
    const x = random(5 * 13, 4), w1 = random(13 * 17, 5), w2 = random(17 * 11, 6)
    const labels = Array.from({ length: 5 }, (_, i) => (i * 7) % 11)
    const f = () => {
      const loss = (p: tf.Tensor, q: tf.Tensor) => {
        const logits = tf.matMul(tf.relu(tf.matMul(tf.tensor2d(x, [5, 13]), p)), q) // [5, 11]
        return tf.neg(tf.mean(tf.sum(tf.mul(tf.oneHot(tf.tensor1d(labels, "int32"), 11), tf.logSoftmax(logits)), -1)))
      }
      const { value, grads } = tf.valueAndGrads(loss)([tf.tensor2d(w1, [13, 17]), tf.tensor2d(w2, [17, 11])])
      return [value, ...grads]
    }
    const gpu = await on("webgpu", f)
    const cpu = await on("cpu", f)
    for (let i = 0; i < 3; i++) expect(maxRel(gpu[i], cpu[i])).toBeLessThan(1e-5)
    expect(gpu[1].some((v) => v !== 0)).toBe(true)
  })

  it("reports bad WGSL as a failure of the read, not zeros, and recovers", async () => {
    const kernelName = "R1flowTestBadWgsl"
    tf.registerKernel({
      kernelName,
      backendName: "webgpu",
      kernelFunc: ({ inputs, backend }) => {
        const x = inputs.x as tf.TensorInfo
        const size = x.shape.reduce((p, d) => p * d, 1)
        const program = {
          variableNames: ["x"],
          outputShape: x.shape,
          shaderKey: kernelName,
          size: true,
          workgroupSize: [64, 1, 1] as [number, number, number],
          dispatchLayout: { x: [0] },
          dispatch: [Math.ceil(size / 64), 1, 1] as [number, number, number],
          getUserCode: () => "fn main(index : i32) { this is not WGSL }"
        }
        return (backend as unknown as { runWebGPUProgram(p: unknown, i: Array<tf.TensorInfo>, d: tf.DataType): tf.TensorInfo })
          .runWebGPUProgram(program, [x], "float32")
      }
    })
    try {
      const y = tf.engine().runKernel(kernelName, { x: tf.ones([10]) }, {}) as tf.Tensor
      await expect(y.data()).rejects.toMatchObject({ _tag: "WebGpuError", message: expect.stringMatching(/WGSL/) })
      y.dispose()
      // The errors were reported once; the next op runs and reads normally.
      expect(await tf.add(tf.ones([3]), 1).data()).toEqual(new Float32Array([2, 2, 2]))
    } finally {
      tf.unregisterKernel(kernelName, "webgpu")
    }
  })

  it("keeps int32 exact below 2^24 (token ids)", async () => {
    const ids = tf.tensor1d([0, 1, 151_935, 16_777_215], "int32")
    expect(Array.from(await tf.add(ids, tf.scalar(0, "int32")).data())).toEqual([0, 1, 151_935, 16_777_215])
  })
})
