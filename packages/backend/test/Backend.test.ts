import * as tf from "@tensorflow/tfjs"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { Backend } from "../src/index.js"

describe("Backend.init", () => {
  it("tries the backends fastest first and runs the first that loads", async () => {
    delete process.env[Backend.ENV_VAR]
    const info = await Backend.init()
    expect(info.tried.map((t) => t.name)).toEqual(Backend.order.slice(0, info.tried.length))
    expect(info.tried.slice(0, -1).every((t) => !t.ok && t.reason.length > 0)).toBe(true)
    expect(info.tried[info.tried.length - 1]).toMatchObject({ name: info.name, ok: true })
    expect(tf.getBackend()).toBe(info.name === "tensorflow-gpu" ? "tensorflow" : info.name)
    // Where tfjs-node is not installed (as on CI), wasm is the CPU default and the failures say why.
    if (info.name === "wasm") {
      expect(info.tried[0].reason).toMatch(/tfjs-node-gpu/)
      expect(info.kernels).toEqual(["BatchMatMul"])
      expect(info.threads).toBeGreaterThanOrEqual(1)
    }
  })

  it("is idempotent and refuses to switch to another forced backend", async () => {
    const a = await Backend.init()
    const b = await Backend.init()
    expect(b).toBe(a)
    const other = a.name === "cpu" ? "wasm" : "cpu"
    await expect(Backend.init({ force: other })).rejects.toMatchObject({ _tag: "BackendError" })
  })

  it("has an Effect wrapper that returns the same record", async () => {
    const info = await Effect.runPromise(Backend.initEffect())
    expect(info).toBe(await Backend.init())
  })
})
