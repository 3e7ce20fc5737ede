/**
 * TensorFlow.js on WebGPU through Dawn for Node (the `webgpu` npm package: a prebuilt `dawn.node` that opens
 * `libvulkan.so.1` at run time) and `@tensorflow/tfjs-backend-webgpu`.
 *
 * What the stock setup gets wrong in Node, and what this module does about it:
 * - the tfjs module registers its backend only if `navigator.gpu` exists when it is imported, and its own
 *   factory asks for whatever adapter Dawn offers first. Here the adapter is requested and judged first
 *   (`open`), `navigator.gpu` is set, the module imported, and its factory replaced by one that uses the
 *   device already opened;
 * - `setBackend('webgpu')` returns false and tfjs keeps another backend when no adapter is found: the caller
 *   (`Backend`) checks it;
 * - bad WGSL or an out-of-limits dispatch does not throw: Dawn raises `uncapturederror` on the device and
 *   the result reads back as zeros. Every such error is kept, and the next read of a tensor (`data()`,
 *   `array()`) rejects with `WebGpuError` naming it instead of returning the zeros;
 * - `WEBGPU_CPU_FORWARD` (on by default) runs ops on small CPU-resident inputs on the cpu backend: turned off,
 *   so what runs on `webgpu` is the WGSL kernels;
 * - software adapters (Mesa lavapipe, SwiftShader: ~2 GFLOP/s) are slower than the wasm backend, so they are
 *   used only when `webgpu` is forced (`allowSoftware`); the automatic choice skips them.
 * Synchronous reads (`dataSync`) throw on GPU tensors (the model and trainers read through `Read`); int32 is computed through float32 (exact below 2^24).
 */
import * as tf from "@tensorflow/tfjs"
import { Effect, Schema } from "effect"
import type { WebGPUBackend } from "@tensorflow/tfjs-backend-webgpu"

/** What Dawn reports about the adapter (recorded in the run manifest). */
export interface Adapter {
  readonly vendor: string
  readonly architecture: string
  readonly device: string
  readonly description: string
  /** A CPU implementation (lavapipe, SwiftShader): correctness only, never speed. */
  readonly software: boolean
}

/** No adapter, a refused software adapter, a device that could not be opened, or an error the device raised. */
export class WebGpuError extends Schema.TaggedError<WebGpuError>()("WebGpuError", {
  message: Schema.String
}) {}

/** An opened adapter and device, with the errors the device raised and nobody has seen yet. */
export interface Gpu {
  readonly adapter: Adapter
  readonly device: GPUDevice
  readonly info: GPUAdapterInfo
  /** Errors raised by the device (`uncapturederror`, device lost) since the last `check`. */
  readonly errors: Array<string>
}

const SOFTWARE = /llvmpipe|lavapipe|swiftshader|softpipe/i

/** Whether Dawn's adapter is a CPU implementation (Dawn's fallback flag, or the name of a known one). */
export const isSoftware = (info: GPUAdapterInfo): boolean =>
  (info as { isFallbackAdapter?: boolean }).isFallbackAdapter === true || info.architecture === "software" ||
  SOFTWARE.test(`${info.vendor} ${info.device} ${info.description}`)

const describe = (info: GPUAdapterInfo): Adapter => ({
  vendor: info.vendor,
  architecture: info.architecture,
  device: info.device,
  description: info.description,
  software: isSoftware(info)
})

/** One line naming the adapter. */
export const label = (a: Adapter): string =>
  `${a.description || a.device || "unnamed adapter"} (vendor ${a.vendor || "?"}, ${a.architecture || "?"}${a.software && a.architecture !== "software" ? ", software" : ""})`

const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e)).split("\n")[0]

// dawn.node is one native module per process: one `GPU` instance serves every open.
let instance: { gpu: GPU; globals: object } | undefined
const dawn = async () => {
  if (instance === undefined) {
    const { create, globals } = await import("webgpu")
    instance = { gpu: create([]), globals }
  }
  return instance
}

/**
 * Requests the adapter and, when it qualifies, opens a device with the limits tfjs asks for and listens for
 * its errors. A software adapter is refused unless `allowSoftware`.
 */
const openUnscoped = async (options: { readonly allowSoftware: boolean }): Promise<Gpu> => {
  const { gpu } = await dawn()
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" })
  if (adapter === null) {
    throw new WebGpuError({ message: "no WebGPU adapter: Dawn found no Vulkan device Dawn accepts (needs libvulkan1 and a Vulkan ICD: the GPU driver's, or Mesa ≥ 24 lavapipe)" })
  }
  const described = describe(adapter.info)
  if (described.software && !options.allowSoftware) {
    throw new WebGpuError({ message: `software adapter ${label(described)}: used only when webgpu is forced` })
  }
  const l = adapter.limits
  const device = await adapter.requestDevice({
    requiredLimits: {
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup
    }
  })
  const errors: Array<string> = []
  device.addEventListener("uncapturederror", (event) => {
    errors.push(messageOf((event as GPUUncapturedErrorEvent).error.message))
  })
  void device.lost.then((lost) => {
    if (lost.reason !== "destroyed") errors.push(`device lost: ${lost.message}`)
  })
  return { adapter: described, device, info: adapter.info, errors }
}

/** Fails with the first error the device raised since the last check (and forgets them all). */
export const check = (gpu: Gpu): void => {
  if (gpu.errors.length === 0) return
  const all = gpu.errors.splice(0)
  throw new WebGpuError({ message: `WebGPU device error${all.length > 1 ? ` (1 of ${all.length})` : ""}: ${all[0]}` })
}

/** The adapter and device as a resource: the device is destroyed when the scope closes. */
export const open = (options: { readonly allowSoftware: boolean }) =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: () => openUnscoped(options),
      catch: (e) => (e instanceof WebGpuError ? e : new WebGpuError({ message: messageOf(e) }))
    }),
    (gpu) => Effect.sync(() => gpu.device.destroy())
  )

/**
 * Makes `gpu` the device of tfjs's `webgpu` backend (call once; then `tf.setBackend('webgpu')`): sets
 * `navigator.gpu`, imports the backend module, replaces its factory, turns `WEBGPU_CPU_FORWARD` off.
 */
export const register = async (gpu: Gpu): Promise<void> => {
  const { gpu: navigatorGpu, globals } = await dawn()
  for (const [k, v] of Object.entries(globals)) if (!(k in globalThis)) Object.assign(globalThis, { [k]: v })
  const g = globalThis as { navigator?: { gpu?: GPU } }
  if (g.navigator === undefined) Object.defineProperty(globalThis, "navigator", { value: { gpu: navigatorGpu }, configurable: true, writable: true })
  else if (g.navigator.gpu === undefined) Object.defineProperty(g.navigator, "gpu", { value: navigatorGpu, configurable: true })
  const mod = await import("@tensorflow/tfjs-backend-webgpu")
  tf.env().set("WEBGPU_CPU_FORWARD", false)
  if (tf.findBackendFactory("webgpu") !== null) tf.removeBackend("webgpu")
  tf.registerBackend("webgpu", () => guardReads(new mod.WebGPUBackend(gpu.device, gpu.info), gpu), 3)
}

/** Makes every read of a tensor fail when the device raised an error since the last check. */
const guardReads = (backend: WebGPUBackend, gpu: Gpu): WebGPUBackend => {
  const read = backend.read.bind(backend)
  backend.read = async (dataId) => {
    const values = await read(dataId)
    check(gpu)
    return values
  }
  return backend
}

/** The device of the registered `webgpu` backend (for kernels that run their own pipelines). */
export const deviceOf = (backend: tf.KernelBackend): GPUDevice => (backend as unknown as WebGPUBackend).device
