/**
 * Registers r1flow's native CPU kernels over the wasm or cpu backend's, through tfjs's kernel registry, so
 * model code is unchanged and another backend (tfjs-node, a GPU) still runs its own kernels.
 *
 * The kernels read and write the tensors in place (see `Memory`): in the wasm heap (at most 4 GiB in all), or
 * in the cpu backend's typed arrays (each its own allocation, so a run may hold more than 4 GiB). The addon does
 * the arithmetic on OpenBLAS when `libopenblas.so.0` is present, else on its own blocked SIMD GEMM, over all
 * cores. Without the addon `install` changes nothing and says why.
 */
import * as tf from "@tensorflow/tfjs"
import * as AdamW from "./AdamW.js"
import * as Attention from "./Attention.js"
import * as Decode from "./Decode.js"
import * as Elementwise from "./Elementwise.js"
import * as Fused from "./Fused.js"
import * as Layout from "./Layout.js"
import * as MatMul from "./MatMul.js"
import type { BackendName } from "./Memory.js"
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

/** Per backend: kernels registered before ours (restored by `uninstall`) and the names of ours added anew. */
interface Registered {
  readonly previous: Map<string, tf.KernelConfig>
  readonly added: Set<string>
  state?: Installed
}
const registered = new Map<BackendName, Registered>()

const slot = (backend: BackendName): Registered => {
  let r = registered.get(backend)
  if (r === undefined) registered.set(backend, (r = { previous: new Map(), added: new Set() }))
  return r
}

const replace = (backend: BackendName, kernelName: string, make: (previous: tf.KernelFunc) => tf.KernelFunc): boolean => {
  const before = tf.getKernel(kernelName, backend)
  if (before === undefined) return false
  slot(backend).previous.set(kernelName, before)
  tf.unregisterKernel(kernelName, backend)
  tf.registerKernel({ ...before, kernelFunc: make(before.kernelFunc) })
  return true
}

const add = (backend: BackendName, kernelName: string, kernelFunc: tf.KernelFunc): boolean => {
  if (tf.getKernel(kernelName, backend) !== undefined) tf.unregisterKernel(kernelName, backend)
  tf.registerKernel({ kernelName, backendName: backend, kernelFunc })
  slot(backend).added.add(kernelName)
  return true
}

/** Stock kernels replaced by a native one (which defers to the stock one for what it does not take). */
const replacements = (addon: Native.Addon, backend: BackendName): Array<readonly [string, (prev: tf.KernelFunc) => tf.KernelFunc]> => [
  ["BatchMatMul", (prev) => MatMul.batchMatMul(addon, prev)],
  ...Object.entries(Elementwise.binaryOps).map(([name, op]) => [name, (prev: tf.KernelFunc) => Elementwise.binary(addon, op, prev)] as const),
  ["Exp", (prev) => Elementwise.exp(addon, prev)],
  ["Square", (prev) => Elementwise.square(addon, prev)],
  ["Transpose", (prev) => Layout.transpose(addon, prev)],
  ["Sum", (prev) => Elementwise.sum(addon, prev)],
  ["GatherV2", (prev) => Elementwise.gather(addon, prev)],
  // The cpu backend's own Identity and same-dtype Cast already share the buffer; its Max is JavaScript.
  ...(backend === "wasm"
    ? [["Identity", (prev: tf.KernelFunc) => Views.identity(prev)] as const, ["Cast", (prev: tf.KernelFunc) => Views.cast(prev)] as const]
    : [["Max", (prev: tf.KernelFunc) => Elementwise.max(addon, prev)] as const])
]

/** Kernels of the fused ops and of what the stock backend lacks, under their own names. */
const own = (addon: Native.Addon): Array<readonly [string, tf.KernelFunc]> => [
  [AdamW.KERNEL, AdamW.kernel(addon)],
  ["UnsortedSegmentSum", Elementwise.segmentSum(addon)],
  [Decode.KERNEL, Decode.kernel(addon)],
  [Decode.WRITE_KERNEL, Decode.writeKernel(addon)],
  ...Attention.kernels(addon),
  ...Fused.kernels(addon)
]

/**
 * Registers the native kernels over `backend`'s current ones (`"wasm"` by default; idempotent per backend).
 * For wasm import `@tensorflow/tfjs-backend-wasm` first (it registers the kernels replaced here). A no-op,
 * with the reason, when the addon is missing or the backend's kernels are not registered.
 */
export const install = (backend: BackendName = "wasm"): Installed => {
  const done = registered.get(backend)?.state
  if (done !== undefined) return done
  const loaded = Native.load()
  if (!loaded.ok) return { kernels: [], blas: null, reason: loaded.reason }
  const { addon } = loaded
  const kernels: Array<string> = []
  for (const [name, make] of replacements(addon, backend)) if (replace(backend, name, make)) kernels.push(name)
  if (kernels.length > 0) for (const [name, f] of own(addon)) if (add(backend, name, f)) kernels.push(name)
  if (kernels.length === 0) {
    const hint = backend === "wasm" ? " (import @tensorflow/tfjs-backend-wasm first)" : ""
    return { kernels, blas: null, reason: `the ${backend} backend's kernels are not registered${hint}` }
  }
  const info = addon.info()
  // Where the library was simply not found, say what provides it (pretraining ~25 % faster with it).
  const hint = info.blasError.startsWith("tried") ? "; Debian's libopenblas0-pthread provides it" : ""
  const gemm = info.blas ?? `the addon's own SIMD GEMM (no BLAS: ${info.blasError}${hint})`
  const build = process.env.R1FLOW_NATIVE_SANITIZE === "1" ? " (ASan + UBSan build)" : ""
  const state: Installed = { kernels, blas: info.blas, reason: `native${build} ${kernels.join(", ")}; GEMM on ${gemm}; ${info.threads} thread(s)` }
  slot(backend).state = state
  return state
}

/** Puts back the kernels `install` replaced on `backend`, or on every backend (benchmarks and tests compare the two). */
export const uninstall = (backend?: BackendName): void => {
  for (const [name, r] of registered) {
    if (backend !== undefined && name !== backend) continue
    for (const [kernel, config] of r.previous) {
      tf.unregisterKernel(kernel, name)
      tf.registerKernel(config)
    }
    for (const kernel of r.added) tf.unregisterKernel(kernel, name)
    registered.delete(name)
  }
}

/** What is installed on `backend` (default wasm) now, if anything. */
export const installed = (backend: BackendName = "wasm"): Installed | undefined => registered.get(backend)?.state
