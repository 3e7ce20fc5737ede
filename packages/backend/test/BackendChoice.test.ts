import * as tf from "@tensorflow/tfjs"
import { describe, expect, it } from "vitest"
import { Backend } from "../src/index.js"

const GiB = 2 ** 30

describe("Backend.estimate and Backend.choose", () => {
  it("counts 4 bytes a weight, 12 a trainable parameter (gradient, two moments), and the activations", () => {
    // Qwen2.5-0.5B shape: 24 layers, width 896, kv width 128, FFN 4864, vocab 151,936, tied embeddings.
    const perLayer = 896 * 896 * 2 + 896 * 128 * 2 + 896 + 128 * 2 + 3 * 896 * 4864 + 2 * 896
    const qwen = 24 * perLayer + 151936 * 896 + 896
    expect(qwen).toBeGreaterThan(4.9e8)
    const full = Backend.estimate({ parameters: qwen, reference: qwen })
    expect(full).toBe(20 * qwen)
    expect(Backend.estimate({ parameters: 1e6, trainable: 1e4, activations: 123 })).toBe(4e6 + 12e4 + 123)
    expect(() => Backend.estimate({ parameters: -1 })).toThrow(/parameters must be a finite number/)
    expect(() => Backend.estimate({ parameters: 1, activations: NaN })).toThrow(/activations/)
  })

  it("keeps wasm up to 3 GiB and takes cpu above, saying why", () => {
    expect(Backend.WASM_BUDGET).toBe(0.75 * Backend.WASM_HEAP_BYTES)
    expect(Backend.choose(0).name).toBe("wasm")
    expect(Backend.choose(3 * GiB).name).toBe("wasm")
    expect(Backend.choose(3 * GiB + 1).name).toBe("cpu")
    expect(Backend.choose(0.5 * GiB).reason).toBe("the run needs ~0.50 GiB, within the 3.0 GiB wasm takes (3/4 of its 4.0 GiB heap)")
    expect(Backend.choose(9.8 * GiB).reason).toBe("the run needs ~9.8 GiB, above the 3.0 GiB wasm takes (3/4 of its 4.0 GiB heap)")
  })
})

describe("Backend.init with a run above the wasm heap", () => {
  it("rejects a bytesNeeded that is not a size", async () => {
    await expect(Backend.init({ bytesNeeded: -5 })).rejects.toMatchObject({ _tag: "BackendError", message: expect.stringMatching(/bytesNeeded/) })
  })

  it("skips wasm, runs cpu with the native kernels, and records the reason and the size", async () => {
    delete process.env[Backend.ENV_VAR]
    const info = await Backend.init({ bytesNeeded: 10 * GiB })
    expect(info.bytesNeeded).toBe(10 * GiB)
    const wasm = info.tried.find((t) => t.name === "wasm")
    // A GPU or libtensorflow backend, where one loads, comes first; on CI's machines none does.
    if (info.name !== "cpu") return
    expect(wasm).toEqual({ name: "wasm", ok: false, reason: "not tried: the run needs ~10.0 GiB, above the 3.0 GiB wasm takes (3/4 of its 4.0 GiB heap)" })
    expect(info.reason).toMatch(/^cpu: the run needs ~10\.0 GiB, above the 3\.0 GiB wasm takes/)
    expect(tf.getBackend()).toBe("cpu")
    const { Native } = await import("@r1flow/kernels")
    if (!Native.load().ok) return
    expect(info.kernels).toEqual(expect.arrayContaining(["BatchMatMul", "Transpose", "R1AdamW", "R1CausalAttention"]))
    expect(info.reason).toMatch(/JavaScript \+ native .*BatchMatMul/)
    const profile = await tf.profile(() => void tf.tidy(() => tf.matMul(tf.ones([3, 4]), tf.ones([4, 2])).dataSync()))
    expect(profile.kernelNames).toContain("BatchMatMul")
    expect(Array.from(tf.tidy(() => tf.matMul(tf.ones([3, 4]), tf.ones([4, 2])).dataSync()))).toEqual([4, 4, 4, 4, 4, 4])
  })
})
