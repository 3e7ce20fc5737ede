/**
 * The native addon (`build/Release/r1kernels.node`), loaded once; `undefined` with the reason when it was
 * not built or does not load. Built by `scripts/build-native.mjs` at `npm install`.
 */
import { existsSync } from "node:fs"
import { createRequire } from "node:module"

/**
 * What the addon exports. Offsets and strides are in bytes into `heap` (a view of the whole wasm memory), or,
 * where `heap` is `null`, addresses from `address` (the cpu backend's typed arrays; bounds are the caller's).
 */
export interface Addon {
  /** Where a typed array's bytes are, for a `null` heap (0 for an empty array); stable for the array's life. */
  address(array: ArrayBufferView): number
  /**
   * `C[i] = op(A[i]) · op(B[i])` for `i < batch`, row-major, `op(A)` `[m, k]`, `op(B)` `[k, n]`, `C` `[m, n]`;
   * operand `i` starts at `off + i·stride` (stride 0 broadcasts one matrix over the batch).
   */
  gemm(
    heap: Uint8Array | null, batch: number, m: number, n: number, k: number, transposeA: 0 | 1, transposeB: 0 | 1,
    aOff: number, aStride: number, bOff: number, bStride: number, cOff: number, cStride: number
  ): void
  /** `out[i] = exp(x[i])`, `n` float32 values (≤ 2 ulp; 0 below −87.34, +inf above 88.72, NaN kept). */
  exp(heap: Uint8Array | null, xOff: number, outOff: number, n: number): void
  /**
   * `out = a op b` (op 0 add, 1 sub, 2 mul, 3 div) over the collapsed output shape in `desc`
   * (`[rank, shape…, a strides…, b strides…]`, element strides, the last ones 0 or 1).
   */
  binary(heap: Uint8Array | null, op: number, aOff: number, bOff: number, outOff: number, desc: Int32Array): void
  /**
   * `out[o, i, :] = x[o, idx[i], :]` for `x` `[outer, dim, inner]` of `elemBytes`-byte elements; returns −1,
   * or the first index outside `[0, dim)` (nothing written then).
   */
  gather(heap: Uint8Array | null, elemBytes: number, xOff: number, outer: number, dim: number, inner: number, idxOff: number, nIdx: number, outOff: number): number
  /** `out[o, i] = Σ_m x[o, m, i]` for float32 `x` `[outer, dim, inner]`. */
  sum(heap: Uint8Array | null, xOff: number, outer: number, dim: number, inner: number, outOff: number): void
  /** Switches BLAS on (when it loaded) or off (the own GEMM); returns whether BLAS is now in use. */
  useBlas(on: boolean): boolean
  /** The BLAS in use (`null`: the addon's own GEMM), why none loaded, and the thread count. */
  info(): { blas: string | null; blasError: string; threads: number }
  /**
   * The thread pool's own test: `jobs` jobs of 1..`maxCount` chunks (seeded), returning how many times a chunk
   * ran other than exactly once or was still running after its job returned (0 is the contract).
   */
  poolCheck(jobs: number, maxCount: number, seed: number): number
}

/** The addon, or why it is not there. */
export type Loaded = { readonly ok: true; readonly addon: Addon } | { readonly ok: false; readonly reason: string }

let loaded: Loaded | undefined

/**
 * Loads the addon (once). `R1FLOW_NATIVE=0` disables it; `R1FLOW_NATIVE_SANITIZE=1` loads the ASan + UBSan
 * build from build/Sanitize/ instead (made and run by `tools/scripts/sanitize.mjs`).
 */
export const load = (): Loaded => {
  if (loaded !== undefined) return loaded
  if (process.env.R1FLOW_NATIVE === "0") {
    loaded = { ok: false, reason: "disabled by R1FLOW_NATIVE=0" }
    return loaded
  }
  try {
    // src/ and dist/ both sit one level below the package root.
    const build = process.env.R1FLOW_NATIVE_SANITIZE === "1" ? "Sanitize" : "Release"
    const addon = createRequire(import.meta.url)(`../build/${build}/r1kernels.node`) as Addon
    loaded = { ok: true, addon }
  } catch (e) {
    const msg = (e instanceof Error ? e.message : String(e)).split("\n")[0]
    const log = new URL("../build/native-build.log", import.meta.url)
    const built = existsSync(log) ? `its build failed, see ${log.pathname}` : "run `npm install` or `node packages/kernels/scripts/build-native.mjs` to build it"
    loaded = { ok: false, reason: `native addon not loaded (${msg}); ${built}` }
  }
  return loaded
}
