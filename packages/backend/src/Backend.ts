/**
 * Picks the fastest TensorFlow.js backend that loads, and records why.
 *
 * Order: `tensorflow-gpu` (`@tensorflow/tfjs-node-gpu`, CUDA) → `webgpu` (Dawn, a hardware adapter only: see
 * `WebGpu`) → `tensorflow` (`@tensorflow/tfjs-node`) → `wasm` (`@tensorflow/tfjs-backend-wasm`, SIMD) → `cpu`
 * (tfjs's JavaScript backend; with the native kernels of `@r1flow/kernels` its hot ops run natively on its typed
 * arrays, else it is ~30x slower than wasm). A software WebGPU adapter (lavapipe, SwiftShader) runs only when forced.
 *
 * The wasm backend keeps every tensor in one wasm32 heap of at most 4 GiB; the cpu backend's tensors are separate
 * typed arrays with no such ceiling. So the automatic choice takes the run's size (`bytesNeeded`, see `estimate`):
 * wasm+native while the run fits `WASM_BUDGET` (3 GiB, leaving a quarter of the heap to transient activations,
 * allocator fragmentation and the model's other buffers), cpu+native above it; `Info.reason` says which and why.
 * At small sizes wasm+native is faster (measured: a 42.5M-parameter training step 1.1 s on wasm, 1.4–2.6 s on
 * cpu; fresh typed arrays fault their pages in, the wasm heap reuses its memory), so it stays the default there.
 * The two tfjs-node packages are optional dependencies whose install script downloads libtensorflow from
 * outside the npm registry, so they are imported dynamically and a failed import falls through.
 * `R1FLOW_BACKEND` (or `options.force`) forces one backend; a forced backend that fails is an error.
 * On wasm, `WasmKernels.install` replaces the stock `BatchMatMul` with one that always takes the fast
 * XNNPACK path (see there).
 */
import * as tf from "@tensorflow/tfjs"
import { Effect, Exit, Scope, Schema } from "effect"
import { existsSync, readdirSync } from "node:fs"
import * as WasmKernels from "./WasmKernels.js"
import * as WebGpu from "./WebGpu.js"
import * as WebGpuKernels from "./WebGpuKernels.js"

/** The backends r1flow knows, fastest first. */
export const Name = Schema.Literals(["tensorflow-gpu", "webgpu", "tensorflow", "wasm", "cpu"])
/** A backend name as used by `R1FLOW_BACKEND` and the `backend` config key. */
export type Name = typeof Name.Type

/** The order backends are tried in when none is forced. */
export const order: ReadonlyArray<Name> = ["tensorflow-gpu", "webgpu", "tensorflow", "wasm", "cpu"]

/** One attempt to load a backend. */
export interface Attempt {
  readonly name: Name
  readonly ok: boolean
  /** Why it failed (the error message), or what loaded. */
  readonly reason: string
}

/** The backend that runs, for the run manifest. */
export interface Info {
  readonly name: Name
  /** Every backend tried, in order, with what happened. */
  readonly tried: ReadonlyArray<Attempt>
  /** One line: why this backend (forced by whom, or the first that loaded). */
  readonly reason: string
  /** Worker threads of the backend, where it reports them (wasm). */
  readonly threads?: number
  /** Kernels r1flow registered over the backend's stock ones. */
  readonly kernels?: ReadonlyArray<string>
  /** The WebGPU adapter (webgpu only). */
  readonly adapter?: WebGpu.Adapter
  /** The run's size the choice was given (`init`'s `bytesNeeded`), where it was. */
  readonly bytesNeeded?: number
}

/** The wasm32 heap's ceiling: 65,536 pages of 64 KiB, every tensor of the run in it. */
export const WASM_HEAP_BYTES = 4 * 2 ** 30
/**
 * The most a run may hold and still go on wasm: 3 GiB, three quarters of the heap. The rest is for what an
 * estimate does not count well: a step's transient tensors (logits and their softmax pieces are several
 * `[B·T, vocab]` copies), the allocator's fragmentation, and the heap's growth by doubling near the top.
 */
export const WASM_BUDGET = 3 * 2 ** 30

/** What a run holds in tensors at once: the input of `estimate`, whose result is `init`'s `bytesNeeded`. */
export interface Footprint {
  /** Parameters of the policy, trained or frozen (float32, 4 bytes each). */
  readonly parameters: number
  /** Parameters with a gradient and two AdamW moments (12 bytes each): all of them (the default) in full training, the adapters' with LoRA. */
  readonly trainable?: number
  /** Parameters of a frozen model held beside the policy (GRPO's KL reference; 4 bytes each); default 0. */
  readonly reference?: number
  /** Bytes of everything else held at once (activations kept for the backward, rollouts, caches); default 0. */
  readonly activations?: number
}

/**
 * Bytes a run holds: `4·(parameters + reference) + 12·trainable + activations` (float32 weights, gradients and
 * moments). Full GRPO with a reference is 20 bytes a parameter: Qwen2.5-0.5B's 494M are ~9.2 GiB before activations.
 */
export const estimate = (f: Footprint): number => {
  const { parameters, trainable = parameters, reference = 0, activations = 0 } = f
  const bad = Object.entries({ parameters, trainable, reference, activations }).find(([, v]) => !Number.isFinite(v) || v < 0)
  if (bad !== undefined) throw new RangeError(`Backend.estimate: ${bad[0]} must be a finite number ≥ 0 (got ${bad[1]})`)
  return 4 * (parameters + reference) + 12 * trainable + activations
}

const gib = (bytes: number): string => `${(bytes / 2 ** 30).toFixed(bytes < 2 ** 30 ? 2 : 1)} GiB`

/** Between the two CPU backends, the one a run of `bytesNeeded` bytes calls for, and why (one line). */
export const choose = (bytesNeeded: number): { readonly name: "wasm" | "cpu"; readonly reason: string } =>
  bytesNeeded <= WASM_BUDGET
    ? { name: "wasm", reason: `the run needs ~${gib(bytesNeeded)}, within the ${gib(WASM_BUDGET)} wasm takes (3/4 of its ${gib(WASM_HEAP_BYTES)} heap)` }
    : { name: "cpu", reason: `the run needs ~${gib(bytesNeeded)}, above the ${gib(WASM_BUDGET)} wasm takes (3/4 of its ${gib(WASM_HEAP_BYTES)} heap)` }

/** No backend could be set up (only possible when one is forced, or when even `cpu` fails). */
export class BackendError extends Schema.TaggedError<BackendError>()("BackendError", {
  message: Schema.String,
  tried: Schema.Array(Schema.Struct({ name: Name, ok: Schema.Boolean, reason: Schema.String }))
}) {}

/** The environment variable that forces a backend. */
export const ENV_VAR = "R1FLOW_BACKEND"

const importOptional = (specifier: string): Promise<unknown> => import(/* @vite-ignore */ specifier)

const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e)).split("\n")[0]

type Loaded = { ok: true; detail: string; threads?: number; kernels?: ReadonlyArray<string>; adapter?: WebGpu.Adapter }

// The device of the webgpu backend lives as long as the process (tfjs's engine holds it); its scope is
// closed only when setting the backend up fails.
let webgpu: WebGpu.Gpu | undefined

/** The adapter and device of the `webgpu` backend, once it is set up (`WebGpu.check` reads its errors). */
export const gpu = (): WebGpu.Gpu | undefined => webgpu

/**
 * Whether this Linux machine shows a GPU device node (a DRM render node or NVIDIA's). Without one any adapter
 * would be a software one, which the automatic choice refuses anyway: not probing spares the demo loading
 * Mesa's lavapipe (0.3-0.5 s) and the warnings Dawn prints on stderr. An explicit Vulkan driver list
 * (`VK_ICD_FILENAMES`, `VK_DRIVER_FILES`) is probed whatever the nodes say.
 */
const mayHaveGpu = (): boolean => {
  if (process.platform !== "linux" || process.env.VK_ICD_FILENAMES !== undefined || process.env.VK_DRIVER_FILES !== undefined) return true
  const entries = (dir: string) => (existsSync(dir) ? readdirSync(dir) : [])
  return entries("/dev/dri").some((n) => n.startsWith("renderD")) || entries("/dev").some((n) => /^nvidia\d+$/.test(n))
}

const tryWebGpu = async (forced: boolean): Promise<Loaded | { ok: false; reason: string }> => {
  if (webgpu !== undefined) return { ok: false, reason: "the webgpu backend was set up once already and then left" }
  if (!forced && !mayHaveGpu()) return { ok: false, reason: "no GPU device node (/dev/dri/renderD*, /dev/nvidia*), so only a software adapter could be had" }
  const scope = Scope.makeUnsafe()
  try {
    const g = await Effect.runPromise(Scope.provide(scope)(WebGpu.open({ allowSoftware: forced })))
    await WebGpu.register(g)
    if (!(await tf.setBackend("webgpu"))) throw new Error(`setBackend('webgpu') returned false on ${WebGpu.label(g.adapter)}`)
    await tf.ready()
    const kernels = WebGpuKernels.install()
    WebGpu.check(g)
    webgpu = g
    return { ok: true, detail: `Dawn on ${WebGpu.label(g.adapter)}; WGSL ${kernels.join(", ")}`, adapter: g.adapter, kernels }
  } catch (e) {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    return { ok: false, reason: messageOf(e) }
  }
}

const tryOne = async (name: Name, forced: boolean): Promise<Loaded | { ok: false; reason: string }> => {
  try {
    switch (name) {
      case "tensorflow-gpu":
      case "tensorflow": {
        await importOptional(name === "tensorflow-gpu" ? "@tensorflow/tfjs-node-gpu" : "@tensorflow/tfjs-node")
        if (!(await tf.setBackend("tensorflow"))) return { ok: false, reason: "setBackend('tensorflow') returned false" }
        await tf.ready()
        return { ok: true, detail: `libtensorflow via ${name === "tensorflow-gpu" ? "@tensorflow/tfjs-node-gpu" : "@tensorflow/tfjs-node"}` }
      }
      case "webgpu":
        return await tryWebGpu(forced)
      case "wasm": {
        await import("@tensorflow/tfjs-backend-wasm")
        if (!(await tf.setBackend("wasm"))) return { ok: false, reason: "setBackend('wasm') returned false" }
        await tf.ready()
        const kernels = WasmKernels.install()
        // Native kernels over these (@r1flow/kernels: BLAS / SIMD on the wasm heap); any failure keeps the wasm ones.
        const native = await import("@r1flow/kernels").then((m) => m.Kernels.install().reason, (e: unknown) => `native kernels not loaded: ${messageOf(e)}`)
        const simd = await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT")
        const wasm = await import("@tensorflow/tfjs-backend-wasm")
        return { ok: true, detail: `wasm${simd ? " SIMD" : ""}; ${native}`, threads: wasm.getThreadsCount(), kernels }
      }
      case "cpu": {
        if (!(await tf.setBackend("cpu"))) return { ok: false, reason: "setBackend('cpu') returned false" }
        await tf.ready()
        // Native kernels over the JavaScript ones (@r1flow/kernels: BLAS / SIMD on the typed arrays, in place).
        const native = await import("@r1flow/kernels").then((m) => m.Kernels.install("cpu"), (e: unknown) => ({ kernels: [], reason: `native kernels not loaded: ${messageOf(e)}` }))
        return native.kernels.length > 0
          ? { ok: true, detail: `JavaScript + ${native.reason}`, kernels: native.kernels }
          : { ok: true, detail: `plain JavaScript (${native.reason})` }
      }
    }
  } catch (e) {
    return { ok: false, reason: messageOf(e) }
  }
}

let current: Promise<Info> | undefined
let currentForce: Name | undefined

const parseForce = (raw: string | undefined): Name | undefined | Error => {
  if (raw === undefined || raw === "") return undefined
  return (order as ReadonlyArray<string>).includes(raw) ? (raw as Name) : new Error(`${ENV_VAR}=${raw} is not one of ${order.join(", ")}`)
}

const select = async (force: Name | undefined, forcedBy: string, bytesNeeded: number | undefined): Promise<Info> => {
  const tried: Array<Attempt> = []
  // The run's size picks between the CPU backends only; a GPU or libtensorflow backend that loads comes first.
  const size = force === undefined && bytesNeeded !== undefined ? choose(bytesNeeded) : undefined
  for (const name of force === undefined ? order : [force]) {
    if (name === "wasm" && size?.name === "cpu") {
      tried.push({ name, ok: false, reason: `not tried: ${size.reason}` })
      continue
    }
    const r = await tryOne(name, force !== undefined)
    if (r.ok) {
      tried.push({ name, ok: true, reason: r.detail })
      const why = force !== undefined
        ? `forced by ${forcedBy}`
        : size !== undefined && (name === "wasm" || name === "cpu") && size.name === name ? size.reason : "the first backend that loaded"
      const reason = `${name}: ${why} (${r.detail})`
      return {
        name, tried, reason, ...(r.threads === undefined ? {} : { threads: r.threads }), ...(r.kernels === undefined ? {} : { kernels: r.kernels }),
        ...(r.adapter === undefined ? {} : { adapter: r.adapter }), ...(bytesNeeded === undefined ? {} : { bytesNeeded })
      }
    }
    tried.push({ name, ok: false, reason: r.reason })
  }
  throw new BackendError({
    message: `no TensorFlow.js backend could be set up: ${tried.map((t) => `${t.name}: ${t.reason}`).join("; ")}`,
    tried
  })
}

/** What `init` takes. */
export interface Options {
  /** The backend to run, no other tried (wins over `R1FLOW_BACKEND`). */
  readonly force?: Name
  /** The bytes the run will hold (`estimate`): above `WASM_BUDGET` the automatic choice skips wasm for cpu. */
  readonly bytesNeeded?: number
}

/**
 * Sets up the backend (idempotent: later calls return the first call's result, whatever their `bytesNeeded`; a
 * later call forcing a different backend is an error). `options.force` wins over `R1FLOW_BACKEND`. Rejects
 * with `BackendError`.
 */
export const init = (options: Options = {}): Promise<Info> => {
  const env = parseForce(process.env[ENV_VAR])
  if (env instanceof Error) return Promise.reject(new BackendError({ message: env.message, tried: [] }))
  const force = options.force ?? env
  if (current !== undefined) {
    if (force !== undefined && force !== currentForce) {
      return current.then((info) =>
        info.name === force ? info : Promise.reject(new BackendError({ message: `backend already initialised as ${info.name}; cannot force ${force}`, tried: info.tried }))
      )
    }
    return current
  }
  currentForce = force
  if (options.bytesNeeded !== undefined && !(Number.isFinite(options.bytesNeeded) && options.bytesNeeded >= 0)) {
    return Promise.reject(new BackendError({ message: `Backend.init: bytesNeeded must be a finite number ≥ 0 (got ${options.bytesNeeded})`, tried: [] }))
  }
  current = select(force, options.force !== undefined ? "options.force" : ENV_VAR, options.bytesNeeded)
  current.catch(() => { current = undefined; currentForce = undefined })
  return current
}

/** `init` as an Effect that logs the choice and the failed attempts. */
export const initEffect = Effect.fnUntraced(function*(options: Options = {}): Effect.fn.Return<Info, BackendError> {
  const info = yield* Effect.tryPromise({
    try: () => init(options),
    catch: (e) => (e instanceof BackendError ? e : new BackendError({ message: messageOf(e), tried: [] }))
  })
  const failed = info.tried.filter((t) => !t.ok).map((t) => `${t.name} (${t.reason})`)
  yield* Effect.logInfo(`tfjs backend ${info.reason}${failed.length > 0 ? `; not loaded: ${failed.join("; ")}` : ""}`)
  return info
})
