import { Backend } from "@r1flow/backend"
import { Rng } from "@r1flow/core"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { Checkpoint, Random, Transformer } from "../src/index.js"

beforeAll(async () => {
  await Backend.init()
})

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "r1flow-random-"))

/** A Qwen2-style config (q/k/v biases, GQA, tied head) at test size, as transformers writes it. */
const qwen2 = {
  architectures: ["Qwen2ForCausalLM"],
  model_type: "qwen2",
  vocab_size: 96,
  hidden_size: 32,
  intermediate_size: 48,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 64,
  rope_theta: 1000000,
  rms_norm_eps: 1e-6,
  hidden_act: "silu",
  tie_word_embeddings: true,
  use_sliding_window: false,
  bos_token_id: 90,
  eos_token_id: 91,
  torch_dtype: "float32"
}

const load = (dir: string) => Effect.runPromise(Checkpoint.loadHf(dir, { trainable: false }))

describe("Random.write", () => {
  it("writes a loadable directory of the config's shape whose weights are Transformer.init's at that seed", async () => {
    const dir = tmp()
    const written = await Effect.runPromise(Random.write(dir, qwen2, { seed: 3 }))
    expect(written.family).toBe("qwen2")
    expect(written.dtype).toBe("float32")
    const onDisk = JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8")) as Record<string, unknown>
    // The given keys come back as given (the config is the export's origin).
    for (const [k, v] of Object.entries(qwen2)) expect(onDisk[k], k).toEqual(v)
    const loaded = await load(dir)
    const c = loaded.model.config
    expect([c.vocabSize, c.dModel, c.dFf, c.nLayers, c.nHeads, c.nKvHeads, c.ropeTheta, c.normEps, c.tieEmbeddings, c.attentionBias])
      .toEqual([96, 32, 48, 2, 4, 2, 1e6, 1e-6, true, true])
    const reference = Transformer.init(c, Rng.make(3, "model/random"))
    const want = await Transformer.toArrays(reference)
    const got = await Transformer.toArrays(loaded.model)
    reference.dispose()
    loaded.model.dispose()
    expect([...got.keys()].sort()).toEqual([...want.keys()].sort())
    for (const [name, w] of want) expect(Buffer.from(got.get(name)!.buffer).equals(Buffer.from(w.buffer)), name).toBe(true)
    // Random, not zeros: the embedding's spread is init's 0.02, computed here from the values.
    const embed = [...got].find(([n]) => n.includes("embed"))![1]
    const std = Math.sqrt(embed.reduce((a, x) => a + x * x, 0) / embed.length)
    expect(std).toBeGreaterThan(0.015)
    expect(std).toBeLessThan(0.025)
  })

  it("same seed, same bytes; another seed, other weights; bfloat16 on request", async () => {
    const [a, b, d] = [tmp(), tmp(), tmp()]
    await Effect.runPromise(Random.write(a, qwen2, { seed: 1 }))
    await Effect.runPromise(Random.write(b, qwen2, { seed: 1 }))
    await Effect.runPromise(Random.write(d, qwen2, { seed: 2 }))
    const bytes = (dir: string) => fs.readFileSync(path.join(dir, Checkpoint.WEIGHTS_FILE))
    expect(bytes(a).equals(bytes(b))).toBe(true)
    expect(bytes(a).equals(bytes(d))).toBe(false)
    const half = tmp()
    const written = await Effect.runPromise(Random.write(half, qwen2, { seed: 1, dtype: "bfloat16" }))
    expect(written.dtype).toBe("bfloat16")
    expect(JSON.parse(fs.readFileSync(path.join(half, "config.json"), "utf8")).torch_dtype).toBe("bfloat16")
    expect(bytes(half).length).toBeLessThan(bytes(a).length * 0.6)
  })

  it("refuses a config the forward cannot reproduce, naming the key, before writing anything", async () => {
    const dir = path.join(tmp(), "out")
    const err = await Effect.runPromise(Effect.flip(Random.write(dir, { ...qwen2, hidden_act: "gelu" })))
    expect(err._tag).toBe("CheckpointError")
    expect(Checkpoint.describe(err)).toMatch(/hidden_act/)
    expect(fs.existsSync(dir)).toBe(false)
  })
})
