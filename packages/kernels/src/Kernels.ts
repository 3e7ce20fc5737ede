/**
 * Registers r1flow's native CPU kernels over the wasm backend's, through tfjs's kernel registry, so model
 * code is unchanged and another backend (tfjs-node, a GPU) still runs its own kernels.
 *
 * The kernels read and write the wasm heap in place (see `MatMul.ts`); the addon does the arithmetic on
 * OpenBLAS when `libopenblas.so.0` is present, else on its own blocked SIMD GEMM, over all cores.
 * Without the addon `install` changes nothing and says why.
 */
import * as tf from "@tensorflow/tfjs"
import * as AdamW from "./AdamW.js"
import * as Attention from "./Attention.js"
import * as Decode from "./Decode.js"
import * as Elementwise from "./Elementwise.js"
import * as Fused from "./Fused.js"
import * as MatMul from "./MatMul.js"
import * as Native from "./Native.js"
import * as Views from "./Views.js"

/** What `install` did. */
export interface Installed {
  /** Kernels now served natively (empty when the addon is missing). */
  readonly kernels: ReadonlyArray<string>
  /** The BLAS under the GEMM, or `null` (the addon's own GEMM, or no addon). */
  readonly blas: string | null
  /** One line: what runs and why. */
  readonly reason: string
}

const BACKEND = "wasm"

/** Kernels registered before ours, restored by `uninstall`. */
const previous = new Map<string, tf.KernelConfig>()
/** Kernels of fused ops that tfjs does not have, added under their own names; removed by `uninstall`. */
const added = new Set<string>()
let state: Installed | undefined

const replace = (kernelName: string, make: (previous: tf.KernelFunc) => tf.KernelFunc): boolean => {
  const before = tf.getKernel(kernelName, BACKEND)
  if (before === undefined) return false
  previous.set(kernelName, before)
  tf.unregisterKernel(kernelName, BACKEND)
  tf.registerKernel({ ...before, kernelFunc: make(before.kernelFunc) })
  return true
}

const add = (kernelName: string, kernelFunc: tf.KernelFunc): boolean => {
  if (tf.getKernel(kernelName, BACKEND) !== undefined) tf.unregisterKernel(kernelName, BACKEND)
  tf.registerKernel({ kernelName, backendName: BACKEND, kernelFunc })
  added.add(kernelName)
  return true
}

/**
 * Registers the native kernels over the wasm backend's current ones (idempotent). Import
 * `@tensorflow/tfjs-backend-wasm` first (it registers the kernels replaced here). A no-op, with the
 * reason, when the addon is missing or the wasm kernels are not registered.
 */
export const install = (): Installed => {
  if (state !== undefined) return state
  const loaded = Native.load()
  if (!loaded.ok) return { kernels: [], blas: null, reason: loaded.reason }
  const { addon } = loaded
  const kernels: Array<string> = []
  if (replace("BatchMatMul", (prev) => MatMul.batchMatMul(addon, prev))) kernels.push("BatchMatMul")
  for (const [name, op] of Object.entries(Elementwise.binaryOps)) {
    if (replace(name, (prev) => Elementwise.binary(addon, op, prev))) kernels.push(name)
  }
  if (replace("Exp", (prev) => Elementwise.exp(addon, prev))) kernels.push("Exp")
  if (replace("Sum", (prev) => Elementwise.sum(addon, prev))) kernels.push("Sum")
  if (replace("GatherV2", (prev) => Elementwise.gather(addon, prev))) kernels.push("GatherV2")
  if (replace("Identity", (prev) => Views.identity(prev))) kernels.push("Identity")
  if (replace("Cast", (prev) => Views.cast(prev))) kernels.push("Cast")
  if (kernels.length > 0) {
    const own: Array<readonly [string, tf.KernelFunc]> = [
      [AdamW.KERNEL, AdamW.kernel(addon)],
      ["UnsortedSegmentSum", Elementwise.segmentSum(addon)],
      [Decode.KERNEL, Decode.kernel(addon)],
      [Decode.WRITE_KERNEL, Decode.writeKernel],
      ...Attention.kernels(addon),
      ...Fused.kernels(addon)
    ]
    for (const [name, f] of own) if (add(name, f)) kernels.push(name)
  }
  if (kernels.length === 0) return { kernels, blas: null, reason: "the wasm backend's kernels are not registered (import @tensorflow/tfjs-backend-wasm first)" }
  const info = addon.info()
  // Where the library was simply not found, say what provides it (pretraining ~25 % faster with it).
  const hint = info.blasError.startsWith("tried") ? "; Debian's libopenblas0-pthread provides it" : ""
  const gemm = info.blas ?? `the addon's own SIMD GEMM (no BLAS: ${info.blasError}${hint})`
  const build = process.env.R1FLOW_NATIVE_SANITIZE === "1" ? " (ASan + UBSan build)" : ""
  state = { kernels, blas: info.blas, reason: `native${build} ${kernels.join(", ")}; GEMM on ${gemm}; ${info.threads} thread(s)` }
  return state
}

/** Puts back the kernels `install` replaced (benchmarks and tests compare the two). */
export const uninstall = (): void => {
  for (const [name, config] of previous) {
    tf.unregisterKernel(name, BACKEND)
    tf.registerKernel(config)
  }
  previous.clear()
  for (const name of added) tf.unregisterKernel(name, BACKEND)
  added.clear()
  state = undefined
}

/** What is installed now, if anything. */
export const installed = (): Installed | undefined => state
