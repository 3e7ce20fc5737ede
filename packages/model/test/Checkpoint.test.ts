import * as tf from "@tensorflow/tfjs"
import { Backend } from "@r1flow/backend"
import { Effect } from "effect"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { Checkpoint, Safetensors, Transformer } from "../src/index.js"
import { ids2d, randomModel, tiny } from "./helpers.js"

beforeAll(async () => {
  await Backend.init()
})

const tmp = () => fs.mkdtemp(path.join(os.tmpdir(), "r1flow-ckpt-"))

const failure = async <A>(effect: Effect.Effect<A, Checkpoint.CheckpointError>): Promise<Checkpoint.CheckpointError> => {
  const err = await Effect.runPromise(Effect.flip(effect))
  expect(err._tag).toBe("CheckpointError")
  return err
}

describe("Checkpoint", () => {
  for (const [label, config] of [
    ["untied Llama-style", tiny],
    ["tied Qwen2-style with q/k/v biases", { ...tiny, tieEmbeddings: true, attentionBias: true }]
  ] as const) {
    it(`save → load is bitwise (${label})`, async () => {
      const dir = await tmp()
      const m = randomModel(config, 1)
      await Effect.runPromise(Checkpoint.save(dir, m))
      expect((await fs.readdir(dir)).sort()).toEqual(["config.json", "model.safetensors"])
      const hf = JSON.parse(await fs.readFile(path.join(dir, "config.json"), "utf8"))
      expect(hf).toMatchObject({ vocab_size: 13, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 24, tie_word_embeddings: config.tieEmbeddings })
      const { tensors } = await Effect.runPromise(Safetensors.read(path.join(dir, "model.safetensors")))
      expect(tensors["model.layers.1.mlp.down_proj.weight"].shape).toEqual([16, 24]) // HF Linear layout [out, in]
      const loaded = await Effect.runPromise(Checkpoint.load(dir))
      expect(loaded.config).toEqual(config)
      expect(loaded.weights.map((w) => w.name)).toEqual(m.weights.map((w) => w.name))
      for (let i = 0; i < m.weights.length; i++) {
        const a = m.weights[i].variable.dataSync() as Float32Array, b = loaded.weights[i].variable.dataSync() as Float32Array
        expect(Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))).toBe(true)
      }
      const [x, y] = tf.tidy(() => [Transformer.forward(m, ids2d([[1, 2, 3]])).dataSync(), Transformer.forward(loaded, ids2d([[1, 2, 3]])).dataSync()])
      expect(Array.from(y)).toEqual(Array.from(x))
      m.dispose()
      loaded.dispose()
    })
  }

  it("names the file and tensor for a missing tensor, a wrong shape, an unexpected tensor", async () => {
    const dir = await tmp()
    const m = randomModel(tiny, 2)
    await Effect.runPromise(Checkpoint.save(dir, m))
    m.dispose()
    const file = path.join(dir, "model.safetensors")
    const { tensors } = await Effect.runPromise(Safetensors.read(file))
    const { ["model.norm.weight"]: _norm, ...rest } = tensors
    await Effect.runPromise(Safetensors.write(file, rest))
    expect(await failure(Checkpoint.load(dir))).toMatchObject({ path: file, tensor: "model.norm.weight", message: expect.stringMatching(/^tensor is missing/) })
    await Effect.runPromise(Safetensors.write(file, { ...rest, "model.norm.weight": { dtype: "F32", shape: [4, 4], data: new Float32Array(16) } }))
    expect((await failure(Checkpoint.load(dir))).message).toMatch(/shape \[4,4\] does not match \[16\]/)
    await Effect.runPromise(Safetensors.write(file, { ...tensors, "model.layers.9.mlp.extra": { dtype: "F32", shape: [1], data: new Float32Array(1) } }))
    expect(await failure(Checkpoint.load(dir))).toMatchObject({ tensor: "model.layers.9.mlp.extra" })
  })

  it("rejects a bad header, a truncated file and a bad config.json clearly", async () => {
    const dir = await tmp()
    const file = path.join(dir, "x.safetensors")
    await fs.writeFile(file, Buffer.from([1, 2, 3]))
    expect((await failure(Safetensors.read(file))).message).toMatch(/shorter than the 8-byte header length/)
    const junk = Buffer.alloc(16)
    junk.writeBigUInt64LE(8n, 0)
    junk.write("{not json", 8)
    await fs.writeFile(file, junk)
    expect(await failure(Safetensors.read(file))).toMatchObject({ path: file, message: expect.stringMatching(/bad header: not JSON/) })
    const huge = Buffer.alloc(8)
    huge.writeBigUInt64LE(1n << 40n, 0)
    await fs.writeFile(file, huge)
    expect((await failure(Safetensors.read(file))).message).toMatch(/exceeds/)
    const good = Safetensors.encode({ a: { dtype: "F32", shape: [2, 3], data: new Float32Array(6) } })
    await fs.writeFile(file, good.subarray(0, good.length - 4))
    expect(await failure(Safetensors.read(file))).toMatchObject({ tensor: "a", message: expect.stringMatching(/past the end of the data/) })
    await fs.writeFile(path.join(dir, "config.json"), JSON.stringify({ model_type: "llama", vocab_size: "many" }))
    expect(await failure(Checkpoint.load(dir))).toMatchObject({ key: "hidden_size", message: "hidden_size is missing" })
  })

  it("reads half-precision tensors as float32 and writes atomically", async () => {
    const dir = await tmp()
    const file = path.join(dir, "h.safetensors")
    // 1.0, -2.0, 0.5 in F16 and BF16.
    await Effect.runPromise(Safetensors.write(file, {
      f16: { dtype: "F16", shape: [3], data: new Uint16Array([0x3c00, 0xc000, 0x3800]) },
      bf16: { dtype: "BF16", shape: [3], data: new Uint16Array([0x3f80, 0xc000, 0x3f00]) }
    }))
    const { tensors } = await Effect.runPromise(Safetensors.read(file))
    expect(Array.from(tensors.f16.data as Float32Array)).toEqual([1, -2, 0.5])
    expect(Array.from(tensors.bf16.data as Float32Array)).toEqual([1, -2, 0.5])
    expect(await fs.readdir(dir)).toEqual(["h.safetensors"])
  })
})
