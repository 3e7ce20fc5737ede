/** What the webgpu kernel tests share: the backend forced to webgpu (so lavapipe serves in CI), seeded data, the error measure. */
import { mkdirSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { expect } from "vitest"
import { Backend } from "../../src/index.js"

// Mesa compiles every shader for seconds the first time; the cache makes later runs fast.
const cache = fileURLToPath(new URL("../../../../node_modules/.cache/mesa-shaders", import.meta.url))

/** Forces webgpu. Returns why it cannot be had (also printed, naming the `tests` skipped), or undefined. */
export const open = async (tests: string): Promise<string | undefined> => {
  mkdirSync(cache, { recursive: true })
  process.env.MESA_SHADER_CACHE_DIR ??= cache
  const skip = await Backend.init({ force: "webgpu" }).then(() => undefined, (e: unknown) => (e instanceof Error ? e.message : String(e)))
  if (skip !== undefined) console.warn(`${tests} skipped: ${skip}`)
  return skip
}

/** Seeded uniform values in [-s, s), made in JS so both paths get the same bits. */
export const random = (n: number, seed: number, s = 1): Float32Array => {
  let state = seed >>> 0
  return Float32Array.from({ length: n }, () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0
    return (state / 2 ** 32 * 2 - 1) * s
  })
}

/** max_i |a_i − b_i| / (1 + |b_i|), over arrays of one length. */
export const maxRel = (a: Float32Array, b: Float32Array): number => {
  expect(a.length).toBe(b.length)
  return a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]) / (1 + Math.abs(b[i]))), 0)
}
