/**
 * What does a run's arithmetic: the tfjs backend, the kernels r1flow registered over its stock ones, and
 * the GEMM under the matrix products. Each checkpoint records it, because a run resumed on different
 * maths (OpenBLAS vs the addon's own GEMM, native kernels on or off, another backend) is no longer
 * bitwise identical to one that never stopped; `resume` refuses such a change unless told otherwise.
 */
import type { Backend } from "@r1flow/backend"
import { Kernels } from "@r1flow/kernels"
import { Schema } from "effect"

/** The maths a run runs on. */
export interface Compute {
  readonly backend: string
  /** Kernels registered over the backend's stock ones, sorted: `<backend>:<name>` by @r1flow/backend (wasm, WGSL), `native:<name>` by @r1flow/kernels. */
  readonly kernels: ReadonlyArray<string>
  /** What computes the matrix products: the BLAS build (`OpenBLAS 0.3.21 … SkylakeX …`), the addon's own GEMM, or the backend's. */
  readonly gemm: string
}

const OWN_GEMM = "r1flow's own SIMD GEMM"

/** Who computes the matrix products where no native kernel took BatchMatMul. */
const STOCK_GEMM: Record<Backend.Name, string> = {
  wasm: "tfjs wasm (XNNPACK)",
  cpu: "tfjs cpu (JavaScript)",
  webgpu: "tfjs webgpu (WGSL)",
  tensorflow: "libtensorflow",
  "tensorflow-gpu": "libtensorflow (CUDA)"
}

/**
 * The maths of this process, once `Backend.init` has run (it installs the kernels). The backend's own list is
 * its r1flow kernels (WasmKernels on wasm, the WGSL ones on webgpu), except on cpu, where what it registered
 * are @r1flow/kernels' native ones, so they are named `native:` like wasm's.
 */
export const of = (backend: Backend.Info): Compute => {
  const native = backend.name === "wasm" || backend.name === "cpu" ? Kernels.installed(backend.name) : undefined
  const own = backend.name === "cpu" ? [] : (backend.kernels ?? []).map((k) => `${backend.name}:${k}`)
  const kernels = [...own, ...(native?.kernels ?? []).map((k) => `native:${k}`)].sort()
  const gemm = native !== undefined && native.kernels.includes("BatchMatMul") ? native.blas ?? OWN_GEMM : STOCK_GEMM[backend.name]
  return { backend: backend.name, kernels, gemm }
}

/** One line: backend, GEMM and kernels. */
export const describe = (c: Compute): string => {
  const native = c.kernels.filter((k) => k.startsWith("native:")).length
  return `backend ${c.backend}, GEMM ${c.gemm}, ${native > 0 ? `${native} native kernels` : "native kernels off"}${c.kernels.length > native ? ` (+ ${c.kernels.length - native} ${c.backend})` : ""}`
}

/** How `now` differs from `was` (empty when they are the same maths). */
export const differences = (was: Compute, now: Compute): Array<string> => {
  const out: Array<string> = []
  if (was.backend !== now.backend) out.push(`backend ${was.backend} → ${now.backend}`)
  if (was.gemm !== now.gemm) out.push(`GEMM ${was.gemm} → ${now.gemm}`)
  const gone = was.kernels.filter((k) => !now.kernels.includes(k)), added = now.kernels.filter((k) => !was.kernels.includes(k))
  if (gone.length > 0) out.push(`kernels no longer registered: ${gone.join(", ")}`)
  if (added.length > 0) out.push(`kernels now registered: ${added.join(", ")}`)
  return out
}

/** A checkpoint made on other maths than this process's; resuming would not be bitwise identical. */
export class BackendChangeError extends Schema.TaggedError<BackendChangeError>()("BackendChangeError", {
  path: Schema.String,
  was: Schema.String,
  now: Schema.String,
  changes: Schema.Array(Schema.String)
}) {
  override get message(): string {
    return `${this.path} was made on ${this.was}; this process runs on ${this.now} (${this.changes.join("; ")}). ` +
      "The resumed run would not be bitwise identical to one that never stopped. Resume it where it ran (the same " +
      "R1FLOW_BACKEND, R1FLOW_NATIVE, R1FLOW_NO_BLAS and machine libraries), or pass --allow-backend-change " +
      "(Run.resume's allowBackendChange) to continue on these maths anyway"
  }
}
