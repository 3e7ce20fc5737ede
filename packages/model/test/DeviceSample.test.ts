// The device draw (webgpu, forced so lavapipe serves in CI) against the host's `sampleToken` on the same logits
// and the same u: equal tokens, log-probs within 1e-5, on odd vocabularies and temperatures. Skips, printing
// why, when no webgpu adapter can be had.
import { Backend } from "@r1flow/backend"
import type { Rng } from "@r1flow/core"
import * as tf from "@tensorflow/tfjs"
import { mkdirSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { DeviceSample, Generate } from "../src/index.js"

const cache = fileURLToPath(new URL("../../../node_modules/.cache/mesa-shaders", import.meta.url))
mkdirSync(cache, { recursive: true })
process.env.MESA_SHADER_CACHE_DIR ??= cache
const skip = await Backend.init({ force: "webgpu" }).then(() => undefined, (e: unknown) => (e instanceof Error ? e.message : String(e)))
if (skip !== undefined) console.warn(`device sampling tests skipped: ${skip}`)

// Seeded values in [0, 1), made in JS so both paths get the same bits.
const uniform = (n: number, seed: number): Float64Array => {
  let state = seed >>> 0
  return Float64Array.from({ length: n }, () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0
    return state / 2 ** 32
  })
}

/** A stream whose next float is `u` (the host draw takes exactly one). */
const fixed = (u: number) => ({ nextFloat: () => u }) as unknown as Rng.Stream

describe.skipIf(skip !== undefined)("DeviceSample.draw on webgpu", () => {
  it("serves webgpu without top-k / top-p only", () => {
    expect(DeviceSample.serves({}, 10)).toBe(true)
    expect(DeviceSample.serves({ topK: 0, topP: 1 }, 10)).toBe(true)
    expect(DeviceSample.serves({ topK: 3 }, 10)).toBe(false)
    expect(DeviceSample.serves({ topP: 0.95 }, 10)).toBe(false)
  })

  for (const V of [1, 7, 513, 5003]) {
    for (const temperature of [0, 0.6, 1, 1.3]) {
      it(`draws what sampleToken draws: V ${V}, τ ${temperature}, 37 rows`, async () => {
        const B = 37
        const values = Float32Array.from(uniform(B * V, V + 100 * temperature), (x) => (x * 2 - 1) * 4)
        const u = uniform(B, 7 + V)
        const logits = tf.tensor2d(values, [B, V])
        const before = tf.memory().numTensors
        const got = await DeviceSample.draw(logits, u, temperature)
        expect(tf.memory().numTensors).toBe(before)
        logits.dispose()
        for (let b = 0; b < B; b++) {
          const want = Generate.sampleToken(values.subarray(b * V, (b + 1) * V), { temperature }, fixed(u[b]))
          expect(got.tokens[b], `row ${b}`).toBe(want.token)
          expect(Math.abs(got.logprobs[b] - want.logprob), `row ${b}`).toBeLessThan(1e-5)
        }
      })
    }
  }
})
