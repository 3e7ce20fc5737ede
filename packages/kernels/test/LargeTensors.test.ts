/**
 * No 4 GiB ceiling: on the cpu backend a tensor is its own typed array, and the native kernels read it in place
 * at its address, so a 5 GiB float32 tensor works there while the wasm backend (one wasm32 heap) cannot hold it.
 * The big array is allocated zeroed and only a few rows are written, so the pages stay unbacked: the test needs
 * little resident memory and reads past the 4 GiB mark without copying 5 GiB.
 */
import * as tf from "@tensorflow/tfjs"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Kernels } from "../src/index.js"
import { lcg, native } from "./helpers.js"

const K = 1024
const ROWS = (5 * 2 ** 30) / 4 / K // [ROWS, K] float32 = 5 GiB
/** The first row that starts past 4 GiB, and the last row. */
const FAR = [Math.ceil(2 ** 32 / 4 / K) + 3, ROWS - 1]

describe.skipIf(!native.ok)("a 5 GiB float32 tensor", () => {
  let big: Float32Array | undefined
  const pattern = (row: number) => Float32Array.from({ length: K }, (_, i) => ((row + 7 * i) % 13) - 6)

  beforeAll(() => {
    big = new Float32Array(ROWS * K)
    for (const r of FAR) big.set(pattern(r), r * K)
  })
  afterAll(() => {
    Kernels.uninstall("cpu")
    big = undefined
  })

  it("cannot be made on the wasm backend", async () => {
    await tf.setBackend("wasm")
    await tf.ready()
    expect(() => tf.zeros([ROWS, K])).toThrow()
  })

  it("is held in place by the cpu backend, and the native matmul, gather and add read it past 4 GiB", async () => {
    await tf.setBackend("cpu")
    await tf.ready()
    expect(Kernels.install("cpu").kernels).toContain("BatchMatMul")
    const a = tf.tensor2d(big as Float32Array, [ROWS, K])
    const rand = lcg(5)
    const bVals = Float32Array.from({ length: K * 2 }, () => rand() * 2 - 1)
    const b = tf.tensor2d(bVals, [K, 2])
    const profile = await tf.profile(() => void tf.tidy(() => tf.matMul(a, b)))
    expect(profile.kernelNames).toEqual(["BatchMatMul"])
    const c = tf.matMul(a, b)
    const out = c.dataSync() as Float32Array
    for (const r of FAR) {
      const p = pattern(r)
      for (let j = 0; j < 2; j++) {
        let ref = 0
        for (let i = 0; i < K; i++) ref += p[i] * bVals[i * 2 + j]
        expect(Math.abs(out[r * 2 + j] - ref), `row ${r}, column ${j}`).toBeLessThan(1e-3)
      }
    }
    expect(out[0]).toBe(0)
    const rows = tf.gather(a, tf.tensor1d(FAR, "int32"))
    expect(Array.from(rows.dataSync())).toEqual([...pattern(FAR[0]), ...pattern(FAR[1])])
    // A slice of it is a view at a byte offset past 4 GiB (the cpu backend's simple slices share the array).
    const sum = tf.add(tf.slice(a, [FAR[1], 0], [1, K]), 1)
    expect(Array.from(sum.dataSync())).toEqual(Array.from(pattern(FAR[1]), (x) => x + 1))
    tf.dispose([a, b, c, rows, sum])
  }, 60_000)
})
