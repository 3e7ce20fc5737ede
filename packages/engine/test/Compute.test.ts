/**
 * What a checkpoint records of the maths is what ran: a webgpu run's kernels are WGSL ones and its GEMM
 * tfjs's webgpu matmul (it was once recorded as `wasm:` kernels on libtensorflow), and the cpu backend's
 * registered kernels are @r1flow/kernels' native ones, named as on wasm.
 */
import type { Backend } from "@r1flow/backend"
import { Kernels } from "@r1flow/kernels"
import * as tf from "@tensorflow/tfjs"
import { afterAll, describe, expect, it } from "vitest"
import * as Compute from "../src/Compute.js"

const info = (name: Backend.Name, kernels?: ReadonlyArray<string>): Backend.Info =>
  ({ name, tried: [], reason: "test", ...(kernels === undefined ? {} : { kernels }) })

describe("Compute.of", () => {
  afterAll(() => Kernels.uninstall("cpu"))

  it("names a webgpu run's kernels webgpu and its GEMM tfjs's WGSL matmul", () => {
    expect(Compute.of(info("webgpu", ["R1Swiglu", "R1RmsNorm"]))).toEqual({
      backend: "webgpu", kernels: ["webgpu:R1RmsNorm", "webgpu:R1Swiglu"], gemm: "tfjs webgpu (WGSL)"
    })
    expect(Compute.describe(Compute.of(info("webgpu", ["R1RmsNorm"])))).toBe("backend webgpu, GEMM tfjs webgpu (WGSL), native kernels off (+ 1 webgpu)")
  })

  it("names the cpu backend's kernels native, with the GEMM they run on", async () => {
    await tf.setBackend("cpu")
    await tf.ready()
    const installed = Kernels.install("cpu")
    const c = Compute.of(info("cpu", installed.kernels))
    expect(c.kernels).toEqual(installed.kernels.map((k) => `native:${k}`).sort())
    expect(c.gemm).toBe(installed.kernels.includes("BatchMatMul") ? installed.blas ?? "r1flow's own SIMD GEMM" : "tfjs cpu (JavaScript)")
  })

  it("keeps tensorflow's GEMM libtensorflow, and a change of backend is a difference", () => {
    expect(Compute.of(info("tensorflow")).gemm).toBe("libtensorflow")
    const wasm: Compute.Compute = { backend: "wasm", kernels: ["wasm:R1RmsNorm"], gemm: "tfjs wasm (XNNPACK)" }
    expect(Compute.differences(wasm, Compute.of(info("webgpu", ["R1RmsNorm"])))).toEqual([
      "backend wasm → webgpu", "GEMM tfjs wasm (XNNPACK) → tfjs webgpu (WGSL)",
      "kernels no longer registered: wasm:R1RmsNorm", "kernels now registered: webgpu:R1RmsNorm"
    ])
  })
})
