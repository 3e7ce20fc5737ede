/** What the kernel tests share: the addon, the native/stock switch, a seeded generator and an error measure. */
import * as tf from "@tensorflow/tfjs"
import "@tensorflow/tfjs-backend-wasm"
import { afterAll, beforeAll, expect } from "vitest"
import { Kernels, Native } from "../src/index.js"
import type { BackendName } from "../src/Memory.js"

/** The addon, or why the native tests skip (said once per file). */
export const native = Native.load()
if (!native.ok) console.warn(`@r1flow/kernels: native tests skipped: ${native.reason}`)

/** The backends every native kernel is tested on, each against that backend's stock kernels. */
export const backends: ReadonlyArray<BackendName> = ["wasm", "cpu"]

let current: BackendName = "wasm"

/** In a `describe`: `backend` (default wasm) with the native kernels installed, removed afterwards. */
export const useNativeKernels = (backend: BackendName = "wasm"): void => {
  beforeAll(async () => {
    current = backend
    await tf.setBackend(backend)
    await tf.ready()
    Kernels.install(backend)
  })
  afterAll(() => Kernels.uninstall(backend))
}

/** Runs f on the native kernels, or (`stock`) on the backend's stock kernels, where the fused ops run their composites. */
export const run = <T>(f: () => T, stock: boolean): T => {
  if (stock) Kernels.uninstall(current)
  try {
    return f()
  } finally {
    if (stock) Kernels.install(current)
  }
}

/** max |x − y| / (1 + |y|) over the elements. */
export const relErr = (x: ArrayLike<number>, y: ArrayLike<number>): number => {
  expect(x.length).toBe(y.length)
  let e = 0
  for (let i = 0; i < x.length; i++) e = Math.max(e, Math.abs(x[i] - y[i]) / (1 + Math.abs(y[i])))
  return e
}

/** A tiny seeded generator so shapes and values are random but repeatable. */
export const lcg = (seed: number) => (): number => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32)
