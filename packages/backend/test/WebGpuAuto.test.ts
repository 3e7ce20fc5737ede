// The automatic choice takes a WebGPU adapter only when it is hardware: on a software one (lavapipe, as in CI)
// it records why webgpu was skipped and goes on to the CPU backends. Skips, printing why, without an adapter.
import * as tf from "@tensorflow/tfjs"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { Backend, WebGpu } from "../src/index.js"

// What adapter this machine offers, opened and closed again as a scoped resource.
const probe = await Effect.runPromise(
  Effect.scoped(WebGpu.open({ allowSoftware: true })).pipe(
    Effect.map((gpu) => ({ adapter: gpu.adapter, skip: undefined })),
    Effect.catch((e) => Effect.succeed({ adapter: undefined, skip: e.message }))
  )
)
const skip = probe.skip ?? (probe.adapter!.software ? undefined : `hardware adapter ${WebGpu.label(probe.adapter!)}: the automatic choice takes it`)
if (skip !== undefined) console.warn(`automatic webgpu choice test skipped: ${skip}`)

describe.skipIf(skip !== undefined)("automatic choice with a software adapter", () => {
  it("skips the software adapter, says why, and picks the CPU backend as before", async () => {
    delete process.env[Backend.ENV_VAR]
    // Machines without a GPU device node are not probed at all; naming the Vulkan driver makes the probe happen.
    process.env.VK_ICD_FILENAMES ??= "/usr/share/vulkan/icd.d/lvp_icd.json"
    const info = await Backend.init()
    const webgpu = info.tried.find((t) => t.name === "webgpu")
    expect(webgpu).toMatchObject({ ok: false, reason: expect.stringMatching(/^software adapter .*used only when webgpu is forced/) })
    expect(webgpu!.reason).toContain(probe.adapter!.description)
    expect(["tensorflow", "wasm", "cpu"]).toContain(info.name)
    expect(info.adapter).toBeUndefined()
    expect(tf.getBackend()).toBe(info.name)
    expect(Backend.gpu()).toBeUndefined()
  })
})
