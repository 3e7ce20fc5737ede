import * as tf from "@tensorflow/tfjs"
import { describe, expect, it } from "vitest"
import { Backend } from "../src/index.js"

describe("R1FLOW_BACKEND", () => {
  it("rejects an unknown name with the allowed ones", async () => {
    process.env[Backend.ENV_VAR] = "tpu"
    await expect(Backend.init()).rejects.toMatchObject({ _tag: "BackendError", message: expect.stringMatching(/tpu.*wasm/) })
  })

  it("forces the named backend and tries nothing else", async () => {
    process.env[Backend.ENV_VAR] = "cpu"
    const info = await Backend.init()
    expect(info).toMatchObject({ name: "cpu", tried: [{ name: "cpu", ok: true }] })
    expect(info.reason).toMatch(/forced by R1FLOW_BACKEND/)
    expect(tf.getBackend()).toBe("cpu")
    delete process.env[Backend.ENV_VAR]
  })

  it("fails clearly when a forced backend cannot load", async () => {
    // A fresh module instance would be needed to re-select; here the forced cpu choice stands.
    await expect(Backend.init({ force: "tensorflow" })).rejects.toMatchObject({ _tag: "BackendError" })
  })
})
