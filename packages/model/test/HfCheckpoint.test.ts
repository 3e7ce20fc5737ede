import * as tf from "@tensorflow/tfjs"
import { Backend } from "@r1flow/backend"
import { Effect } from "effect"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { Checkpoint, Safetensors, Transformer } from "../src/index.js"
import { ids2d } from "./helpers.js"
import { families, writeCheckpoint, type Family } from "./support/hf.js"

beforeAll(async () => {
  await Backend.init()
})

const run = <A>(e: Effect.Effect<A, Checkpoint.CheckpointError>) => Effect.runPromise(e)
const tmp = () => fs.mkdtemp(path.join(os.tmpdir(), "r1flow-export-"))
const IDS = [[1, 5, 9, 3, 36, 0, 7, 2, 11, 30], [4, 4, 8, 15, 16, 23, 1, 0, 2, 35]]

const logits = (m: Transformer.Model) => tf.tidy(() => Transformer.forward(m, ids2d(IDS)).dataSync() as Float32Array)
const same = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))

const failure = async <A>(effect: Effect.Effect<A, Checkpoint.CheckpointError>): Promise<Checkpoint.CheckpointError> => {
  const err = await Effect.runPromise(Effect.flip(effect))
  expect(err._tag).toBe("CheckpointError")
  expect(Checkpoint.describe(err)).not.toMatch(/\n/)
  return err
}

const cases: ReadonlyArray<[Family, Safetensors.FloatDType, number]> = [
  ["llama", "F32", 1],
  ["llama", "BF16", 3],
  ["llama3", "BF16", 1],
  ["llama-linear", "F32", 1],
  ["smollm2", "F16", 2],
  ["mistral", "F32", 2],
  ["qwen2", "BF16", 1],
  ["qwen2-untied", "F16", 1],
  ["qwen3", "BF16", 2],
  ["qwen3", "F32", 1]
]

describe("Hugging Face checkpoints", () => {
  it("the helper covers every family", () => {
    expect(new Set(cases.map((c) => c[0]))).toEqual(new Set(families))
  })

  for (const [family, dtype, shards] of cases) {
    it(`${family} ${dtype}${shards > 1 ? `, ${shards} shards` : ""}: load, run, export, reload → identical logits`, async () => {
      const src = await writeCheckpoint(family, { dtype, shards, invFreq: family === "llama" })
      const { model, origin } = await run(Checkpoint.loadHf(src.dir))
      expect(origin).toMatchObject({ dir: src.dir, family: src.config.model_type, dtype: { F32: "float32", F16: "float16", BF16: "bfloat16" }[dtype] })
      // Every weight holds exactly the stored (widened) values.
      const arrays = await Transformer.toArrays(model)
      for (const [name, v] of src.values) if (!name.endsWith("inv_freq")) expect(same(arrays.get(name)!, v), name).toBe(true)
      expect(arrays.size).toBe(src.values.size)
      const before = logits(model)
      expect(before.every(Number.isFinite)).toBe(true)

      // Export in the source dtype (the default), sharded when the source was.
      const out = await tmp()
      const total = [...src.values.values()].reduce((n, v) => n + v.length, 0) * (dtype === "F32" ? 4 : 2)
      const exported = await run(Checkpoint.exportHf(out, model, { origin, maxShardSize: shards > 1 ? Math.ceil(total / shards) : undefined, eosTokenId: [2, 3] }))
      expect(exported.dtype).toBe(origin.dtype)
      const hf = JSON.parse(await fs.readFile(path.join(out, "config.json"), "utf8"))
      expect(hf).toMatchObject({ model_type: src.config.model_type, architectures: src.config.architectures, torch_dtype: origin.dtype, vocab_size: 37, bos_token_id: 1 })
      expect(hf.rope_scaling ?? null).toEqual(src.config.rope_scaling ?? null)
      if (family === "qwen3") expect(hf.head_dim).toBe(8)
      const generation = JSON.parse(await fs.readFile(path.join(out, "generation_config.json"), "utf8"))
      expect(generation).toMatchObject({ bos_token_id: 1, eos_token_id: [2, 3], temperature: 0.6 })
      if (shards > 1) {
        expect(exported.shards.length).toBeGreaterThan(1)
        const index = JSON.parse(await fs.readFile(path.join(out, "model.safetensors.index.json"), "utf8"))
        expect(index.metadata.total_size).toBe(total)
        expect(Object.keys(index.weight_map).sort()).toEqual(model.weights.map((w) => w.name).sort())
        expect(exported.shards[0]).toBe(`model-00001-of-0000${exported.shards.length}.safetensors`)
      } else {
        expect(exported.shards).toEqual(["model.safetensors"])
      }
      for (const f of exported.shards) {
        const h = await run(Safetensors.readHeader(path.join(out, f)))
        expect(h.metadata.format).toBe("pt")
        expect([...h.tensors.values()].every((t) => t.dtype === dtype)).toBe(true)
      }
      const back = await run(Checkpoint.loadHf(out))
      expect(back.origin.family).toBe(origin.family)
      expect(back.model.config).toEqual(model.config)
      expect(same(logits(back.model), before)).toBe(true)

      // Widened to float32 and back, the logits do not move either.
      const f32 = await tmp()
      await run(Checkpoint.exportHf(f32, back.model, { origin, dtype: "float32" }))
      const wide = await run(Checkpoint.load(f32))
      expect(same(logits(wide), before)).toBe(true)
      for (const m of [model, back.model, wide]) m.dispose()
    })
  }

  it("exports to bf16 by rounding to nearest even, replaces an earlier export's shards and copies tokenizer files", async () => {
    const src = await writeCheckpoint("qwen2", { dtype: "F32", shards: 1 })
    const tokenizer = await tmp()
    await fs.writeFile(path.join(tokenizer, "tokenizer.json"), "{\"model\":{}}")
    await fs.writeFile(path.join(tokenizer, "tokenizer_config.json"), "{}")
    const { model, origin } = await run(Checkpoint.loadHf(src.dir))
    const out = await tmp()
    await run(Checkpoint.exportHf(out, model, { origin, maxShardSize: 2000 }))
    expect((await fs.readdir(out)).filter((f) => f.startsWith("model-")).length).toBeGreaterThan(2)
    const done = await run(Checkpoint.exportHf(out, model, { origin, dtype: "bfloat16", tokenizerDir: tokenizer, padTokenId: 0 }))
    expect((await fs.readdir(out)).sort()).toEqual(["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"])
    expect(done.files).toContain("tokenizer.json")
    expect(JSON.parse(await fs.readFile(path.join(out, "config.json"), "utf8")).torch_dtype).toBe("bfloat16")
    expect(JSON.parse(await fs.readFile(path.join(out, "generation_config.json"), "utf8"))).toMatchObject({ pad_token_id: 0 })
    const back = await run(Checkpoint.loadHf(out))
    expect(back.origin.dtype).toBe("bfloat16")
    const a = (await Transformer.toArrays(back.model)).get("model.embed_tokens.weight")!, f = src.values.get("model.embed_tokens.weight")!
    const rounded = new Float32Array(Uint32Array.from(f, (x) => Safetensors.f32ToBf16(x) << 16).buffer)
    expect(same(a, rounded)).toBe(true)
    expect(same(a, f)).toBe(false)
    model.dispose()
    back.model.dispose()
  })

  it("r1flow's own save → load still round-trips a Qwen3-style and a Llama 3-style model bitwise", async () => {
    for (const family of ["qwen3", "llama3"] as const) {
      const { model } = await run(Checkpoint.loadHf((await writeCheckpoint(family)).dir))
      const dir = await tmp()
      await run(Checkpoint.save(dir, model))
      const back = await run(Checkpoint.load(dir))
      expect(back.config).toEqual(model.config)
      expect(same(logits(back), logits(model))).toBe(true)
      model.dispose()
      back.dispose()
    }
  })

  it("can cap the context it builds rotary tables for", async () => {
    const src = await writeCheckpoint("llama3")
    const full = await run(Checkpoint.loadHf(src.dir))
    const capped = await run(Checkpoint.loadHf(src.dir, { maxSeqLen: 16 }))
    expect(capped.model.config.maxSeqLen).toBe(16)
    expect(same(logits(capped.model), logits(full.model))).toBe(true)
    const out = await tmp()
    await run(Checkpoint.exportHf(out, capped.model, { origin: capped.origin }))
    expect(JSON.parse(await fs.readFile(path.join(out, "config.json"), "utf8")).max_position_embeddings).toBe(512)
    expect(await failure(Checkpoint.loadHf(src.dir, { maxSeqLen: 513 }))).toMatchObject({ key: "max_position_embeddings" })
    full.model.dispose()
    capped.model.dispose()
  })
})

describe("Hugging Face checkpoint errors: one line naming the file and the key or tensor", () => {
  const editConfig = async (dir: string, edit: (c: Record<string, unknown>) => void) => {
    const file = path.join(dir, "config.json")
    const c = JSON.parse(await fs.readFile(file, "utf8"))
    edit(c)
    await fs.writeFile(file, JSON.stringify(c))
    return file
  }
  const configCases: ReadonlyArray<[string, Family, (c: Record<string, unknown>) => void, string, RegExp]> = [
    ["an unsupported model_type", "llama", (c) => void (c.model_type = "gemma2"), "model_type", /model_type "gemma2" is not supported \(supported: llama, mistral, qwen2, qwen3\)/],
    ["an unknown rope type", "llama3", (c) => void ((c.rope_scaling as Record<string, unknown>).rope_type = "yarn"), "rope_scaling.rope_type", /"yarn" is not supported/],
    ["an old-style rope type key", "llama", (c) => void (c.rope_scaling = { type: "dynamic", factor: 2 }), "rope_scaling.type", /"dynamic" is not supported/],
    ["a llama3 rope_scaling without its factors", "llama3", (c) => void delete (c.rope_scaling as Record<string, unknown>).low_freq_factor, "rope_scaling.low_freq_factor", /is missing/],
    ["Mistral's sliding window", "mistral", (c) => void (c.sliding_window = 16), "sliding_window", /16 < max_position_embeddings 64/],
    ["Qwen's use_sliding_window", "qwen2", (c) => void (c.use_sliding_window = true), "use_sliding_window", /not supported/],
    ["another activation", "qwen3", (c) => void (c.hidden_act = "gelu"), "hidden_act", /"gelu" is not supported/],
    ["a shape key of the wrong type", "llama", (c) => void (c.num_hidden_layers = "2"), "num_hidden_layers", /expected a positive integer, got "2"/],
    ["a transformers v5 rope_parameters with an unknown type", "qwen3", (c) => void (c.rope_parameters = { rope_type: "longrope", rope_theta: 1e6 }), "rope_parameters.rope_type", /"longrope"/]
  ]
  for (const [label, family, edit, key, pattern] of configCases) {
    it(`config.json: ${label}`, async () => {
      const { dir } = await writeCheckpoint(family)
      const file = await editConfig(dir, edit)
      const err = await failure(Checkpoint.loadHf(dir))
      expect(err).toMatchObject({ path: file, key, message: expect.stringMatching(pattern) })
      expect(Checkpoint.describe(err)).toContain(`${file}: key ${key}: `)
    })
  }

  it("a missing shard file", async () => {
    const { dir } = await writeCheckpoint("qwen3", { shards: 3, dtype: "BF16" })
    const shard = path.join(dir, "model-00002-of-00003.safetensors")
    await fs.rm(shard)
    const err = await failure(Checkpoint.loadHf(dir))
    expect(err).toMatchObject({ path: shard, message: expect.stringMatching(/shard file is missing \(model.safetensors.index.json puts \d+ tensors in it\)/) })
    expect(err.tensor).toMatch(/^model\./)
    expect(Checkpoint.describe(err)).toMatch(new RegExp(`^${shard}: tensor model\\.\\S+: key weight_map\\.model\\.\\S+: shard file is missing`))
  })

  it("a truncated shard", async () => {
    const { dir } = await writeCheckpoint("llama", { shards: 2, dtype: "F16" })
    const shard = path.join(dir, "model-00002-of-00002.safetensors")
    const bytes = await fs.readFile(shard)
    await fs.writeFile(shard, bytes.subarray(0, bytes.length - 10))
    const err = await failure(Checkpoint.loadHf(dir))
    // The shard lists its tensors in reverse, so the last bytes are the first tensor of its half.
    expect(err).toMatchObject({ path: shard, tensor: expect.stringMatching(/^model\./), message: expect.stringMatching(/past the end of the data .*truncated/) })
    await fs.writeFile(shard, bytes.subarray(0, 20))
    expect(await failure(Checkpoint.loadHf(dir))).toMatchObject({ path: shard, message: expect.stringMatching(/header length \d+ exceeds/) })
  })

  it("a tensor the index names but its shard lacks, and one the config implies but no file holds", async () => {
    const { dir } = await writeCheckpoint("qwen2", { shards: 2 })
    const indexFile = path.join(dir, "model.safetensors.index.json")
    const index = JSON.parse(await fs.readFile(indexFile, "utf8"))
    const name = "model.layers.1.self_attn.k_proj.bias"
    const other = index.weight_map[name] === "model-00001-of-00002.safetensors" ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors"
    await fs.writeFile(indexFile, JSON.stringify({ ...index, weight_map: { ...index.weight_map, [name]: other } }))
    expect(await failure(Checkpoint.loadHf(dir))).toMatchObject({ path: path.join(dir, other), tensor: name, message: expect.stringMatching(/missing from its shard/) })
    const { [name]: _gone, ...rest } = index.weight_map
    await fs.writeFile(indexFile, JSON.stringify({ ...index, weight_map: rest }))
    expect(await failure(Checkpoint.loadHf(dir))).toMatchObject({ path: indexFile, tensor: name, message: expect.stringMatching(/tensor is missing \(config.json implies it\)/) })
  })

  it("a wrong shape, an integer dtype and an unexpected tensor", async () => {
    const src = await writeCheckpoint("qwen3")
    const file = path.join(src.dir, "model.safetensors")
    const { tensors } = await run(Safetensors.read(file))
    const name = "model.layers.0.self_attn.q_norm.weight"
    await run(Safetensors.write(file, { ...tensors, [name]: { dtype: "F32", shape: [4], data: new Float32Array(4) } }))
    const err = await failure(Checkpoint.loadHf(src.dir))
    expect(err).toMatchObject({ path: file, tensor: name, message: "shape [4] does not match [8] expected from config.json" })
    expect(Checkpoint.describe(err)).toBe(`${file}: tensor ${name}: shape [4] does not match [8] expected from config.json`)
    await run(Safetensors.write(file, { ...tensors, [name]: { dtype: "I32", shape: [8], data: new Int32Array(8) } }))
    expect(await failure(Checkpoint.loadHf(src.dir))).toMatchObject({ tensor: name, message: expect.stringMatching(/dtype I32 is not a float type/) })
    await run(Safetensors.write(file, { ...tensors, "model.layers.0.self_attn.o_proj.bias": { dtype: "F32", shape: [16], data: new Float32Array(16) } }))
    expect(await failure(Checkpoint.loadHf(src.dir))).toMatchObject({ tensor: "model.layers.0.self_attn.o_proj.bias", message: expect.stringMatching(/unexpected tensor \(not part of this qwen3 architecture\)/) })
  })

  it("no weights at all, and no config", async () => {
    const { dir } = await writeCheckpoint("llama")
    await fs.rm(path.join(dir, "model.safetensors"))
    expect((await failure(Checkpoint.loadHf(dir))).message).toBe("no model.safetensors or model.safetensors.index.json")
    await fs.rm(path.join(dir, "config.json"))
    expect(await failure(Checkpoint.loadHf(dir))).toMatchObject({ path: path.join(dir, "config.json"), message: "config.json is missing" })
  })
})

describe("half-precision conversions", () => {
  const bitsOf = (x: number) => new Uint32Array(new Float32Array([x]).buffer)[0]
  const fromBf16 = (h: number) => new Float32Array(new Uint32Array([h << 16]).buffer)[0]

  it("f32 → bf16 is round to nearest, ties to even", () => {
    // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: ties go to the even mantissa (1); 1 + 3·2⁻⁸ goes up to 1 + 2⁻⁶.
    expect(Safetensors.f32ToBf16(1 + 2 ** -8)).toBe(0x3f80)
    expect(Safetensors.f32ToBf16(1 + 3 * 2 ** -8)).toBe(0x3f82)
    expect(Safetensors.f32ToBf16(1 + 2 ** -8 + 2 ** -20)).toBe(0x3f81)
    expect(Safetensors.f32ToBf16(-Infinity)).toBe(0xff80)
    expect(Number.isNaN(fromBf16(Safetensors.f32ToBf16(NaN)))).toBe(true)
    expect(Safetensors.f32ToBf16(3.4e38)).toBe(0x7f80) // rounds past the largest bf16 to ∞, as torch does
  })

  it("f32 → f16 and f32 → bf16 pick the nearest representable value (random, subnormal, huge)", () => {
    const xs: Array<number> = [0, -0, 65504, 65519.99, 65520, 1e-8, 2 ** -24, 3 * 2 ** -26, 2 ** -25, 2 ** -25 * 1.0001, 6.1e-5, -1.5e-6]
    let s = 12345
    for (let i = 0; i < 3000; i++) {
      s = (s * 1103515245 + 12345) >>> 0
      xs.push(Math.fround((s / 2 ** 32 - 0.5) * 2 ** ((i % 40) - 28)))
    }
    for (const raw of xs) {
      const x = Math.fround(raw)
      const h = Safetensors.f32ToF16(x), y = Safetensors.f16ToF32(h)
      // Past the largest f16 (65504) by half an ulp or more, IEEE rounding gives ±∞.
      expect(Number.isFinite(y)).toBe(Math.abs(x) < 65520)
      // Neighbours of the chosen value: no representable f16 is nearer, and at a tie the mantissa is even.
      for (const n of [h - 1, h + 1]) {
        if (!Number.isFinite(y) || (n & 0x7c00) === 0x7c00 || n < 0 || ((n ^ h) & 0x8000) !== 0) continue
        const z = Safetensors.f16ToF32(n)
        expect(Math.abs(y - x) <= Math.abs(z - x), `${x} → ${y}, but ${z} is nearer`).toBe(true)
        if (Math.abs(y - x) === Math.abs(z - x) && y !== x) expect(h & 1).toBe(0)
      }
      const b = Safetensors.f32ToBf16(x), w = fromBf16(b)
      for (const n of [b - 1, b + 1]) {
        if ((n & 0x7f80) === 0x7f80 || n < 0 || n > 0xffff || ((n ^ b) & 0x8000) !== 0) continue
        expect(Math.abs(w - x) <= Math.abs(fromBf16(n) - x)).toBe(true)
      }
      expect(bitsOf(w) & 0xffff).toBe(0)
    }
  })
})
