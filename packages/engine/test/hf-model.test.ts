/**
 * Bring your own model: a GRPO run of a few steps on a random tiny Qwen3-layout model with the real Qwen3
 * tokenizer (151k ids) through the built-in `r1-zero-hf` recipe, its export back to a Hugging Face directory
 * and the reload; and the refusals a model directory gets before any stage runs, each one line naming its
 * file and key.
 */
import { Checkpoint, Transformer } from "@r1flow/model"
import { readdirSync, readFileSync, renameSync, rmSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import * as Export from "../src/Export.js"
import * as Run from "../src/Run.js"
import { run, runFail, tempDir } from "./helpers.js"
import { patchConfig, qwen3TokenizerDir, writeQwen3 } from "./support/hf.js"

/** `r1-zero-hf` at test size: 6 problems, 2 GRPO steps of 2 prompts × 2, short generations. */
const tiny = (runs: string, from: string): Array<string> => [
  `runsDir=${runs}`,
  `model.from=${from}`,
  "model.maxSeqLen=160",
  "backend=wasm",
  "stages.1.config.logEvery=1",
  "task.train=6",
  "task.test=2",
  "checkpoint.every=1",
  "stages.0.config.sampling.maxNewTokens=4",
  "stages.1.config.steps=2",
  "stages.1.config.promptsPerStep=2",
  "stages.1.config.groupSize=2",
  "stages.1.config.sampling.maxNewTokens=6",
  "stages.1.config.evalEvery=0",
  "stages.1.config.update.optimizer.learningRate=0.01",
  "stages.2.config.sampling.maxNewTokens=4"
]

const recipe = Run.resolveRecipe("r1-zero-hf")

describe("r1-zero-hf on a tiny Qwen3 model with the real Qwen3 tokenizer", () => {
  it("runs GRPO, keeps the tokenizer and origin, exports an HF directory that reloads with identical weights", async () => {
    const base = tempDir("hf-run")
    const model = join(base, "qwen3-tiny")
    const before = await writeQwen3(model)
    const lines: Array<string> = []
    const t0 = performance.now()
    const result = await run(Run.run(recipe, { overrides: tiny(join(base, "runs"), model), log: (l) => { lines.push(l); console.log(`${((performance.now() - t0) / 1000).toFixed(1)}s ${l}`) } }))
    lines.push(`run took ${((performance.now() - t0) / 1000).toFixed(1)} s`)
    const root = result.dir.root
    const manifest = JSON.parse(readFileSync(join(root, "manifest.json"), "utf8"))
    expect(manifest.tokenizer).toMatchObject({ vocabSize: 151669, engine: "tiktoken" })
    expect(manifest.model).toEqual({ from: model, family: "qwen3", dtype: "bfloat16" })
    expect(readdirSync(join(root, "tokenizer")).sort()).toEqual(["tokenizer.json", "tokenizer_config.json"])
    expect(lines.filter((l) => l.startsWith("── stage")).length).toBe(3)
    const metrics = readFileSync(join(root, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l))
    expect(metrics.filter((m) => "loss" in m || "grpo/loss" in m).length).toBeGreaterThan(0)
    // The source directory moves away: export reads only the run.
    renameSync(model, `${model}.moved`)
    const out = join(base, "exported")
    const exported = await run(Export.run(root, out, { log: (l) => lines.push(l) }))
    expect(exported.exported?.dtype).toBe("bfloat16")
    expect(exported.exported?.family).toBe("qwen3")
    const files = readdirSync(out).sort()
    expect(files).toEqual(["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"])
    const gen = JSON.parse(readFileSync(join(out, "generation_config.json"), "utf8"))
    expect(gen).toMatchObject({ eos_token_id: 151645, pad_token_id: 151643, bos_token_id: 151643 })
    const config = JSON.parse(readFileSync(join(out, "config.json"), "utf8"))
    expect(config).toMatchObject({ model_type: "qwen3", max_position_embeddings: 40960, torch_dtype: "bfloat16", head_dim: 8 })
    // The exported weights are the run's latest policy (rounded to bf16) and differ from the start (GRPO trained it).
    const policy = await run(Checkpoint.load(join(root, "checkpoints", readFileSync(join(root, "checkpoints", "latest"), "utf8").trim(), "policy")))
    const reloaded = await run(Checkpoint.loadHf(out, { trainable: false }))
    const want = await Transformer.toArrays(policy), got = await Transformer.toArrays(reloaded.model)
    policy.dispose()
    reloaded.model.dispose()
    const bf16 = (x: number) => { const f = new Float32Array([x]); const u = new Uint32Array(f.buffer); u[0] = (u[0] + 0x7fff + ((u[0] >>> 16) & 1)) & 0xffff0000; return f[0] }
    let changed = 0
    for (const [name, w] of want) {
      const g = got.get(name)!
      let off = 0
      for (let i = 0; i < w.length; i++) if (g[i] !== bf16(w[i])) off++
      expect(off, name).toBe(0)
      if (w.some((x, i) => x !== before.get(name)![i])) changed++
    }
    expect(changed).toBeGreaterThan(0)
    // An f32 export of the same run is exact.
    const exact = join(base, "exported-f32")
    await run(Export.run(root, exact, { dtype: "float32", maxShardSize: "4MB" }))
    expect(readdirSync(exact)).toContain("model.safetensors.index.json")
    const f32 = await run(Checkpoint.loadHf(exact, { trainable: false }))
    const exactly = await Transformer.toArrays(f32.model)
    for (const [name, w] of want) {
      const g = exactly.get(name)!
      expect(g.length).toBe(w.length)
      expect(w.findIndex((x, i) => g[i] !== x), name).toBe(-1)
    }
    f32.model.dispose()
    // Resume and a standalone eval read the tokenizer the run kept (the source directory is gone).
    rmSync(join(root, "summary.json"))
    const resumed: Array<string> = []
    await run(Run.resume(root, { log: (l) => resumed.push(l) }))
    expect(resumed.some((l) => l.startsWith(`resuming ${root}`))).toBe(true)
    const record = await run(Run.evaluate(root, { data: "held-out", samples: 1, temperature: 0, maxNewTokens: 3, log: () => {} }))
    expect(record.meanLength).toBeGreaterThan(0)
    rmSync(base, { recursive: true, force: true })
  }, 600_000)
})

/** Runs r1-zero-hf with `sets`, checks that it was refused before any stage started and left the runs folder empty; returns its error. */
const refused = async (sets: Array<string>) => {
  const runs = tempDir("hf-refused")
  const lines: Array<string> = []
  const error = (await runFail(Run.run(recipe, { overrides: [`runsDir=${runs}`, ...sets], log: (l) => lines.push(l) }))) as { _tag: string; message: string; problems?: ReadonlyArray<string> }
  expect(lines.filter((l) => l.startsWith("── stage"))).toEqual([])
  expect(readdirSync(runs)).toEqual([])
  return error
}

const oneLine = (message: string) => {
  expect(message.split("\n")).toHaveLength(1)
  return message
}

describe("a model directory is refused before any stage runs, in one line naming the file and key", () => {
  it("r1-zero-hf without model.from says to set it", async () => {
    const e = await refused([])
    expect(e._tag).toBe("ConfigError")
    expect(e.problems).toEqual([expect.stringMatching(/^model\.from: empty: set model\.from=<dir>/)])
  }, 60_000)

  it("an unsupported model_type", async () => {
    const dir = join(tempDir("hf-type"), "m")
    await writeQwen3(dir)
    patchConfig(dir, { model_type: "gemma", architectures: ["GemmaForCausalLM"] })
    const e = await refused([`model.from=${dir}`])
    expect(e._tag).toBe("ModelSourceError")
    expect(oneLine(e.message)).toBe(`${join(dir, "config.json")}: key model_type: model_type "gemma" is not supported (supported: llama, mistral, qwen2, qwen3)`)
  }, 60_000)

  it("a missing shard", async () => {
    const dir = join(tempDir("hf-shard"), "m")
    await writeQwen3(dir, { maxShardSize: 4_000_000 })
    const shards = readdirSync(dir).filter((f) => /^model-\d+-of-\d+\.safetensors$/.test(f)).sort()
    expect(shards.length).toBeGreaterThan(1)
    rmSync(join(dir, shards[1]))
    const e = await refused([`model.from=${dir}`])
    expect(e._tag).toBe("ModelSourceError")
    expect(oneLine(e.message)).toContain(join(dir, shards[1]))
  }, 60_000)

  it("a checkpoint whose vocab_size is smaller than the tokenizer's id space", async () => {
    const dir = join(tempDir("hf-vocab"), "m")
    await writeQwen3(dir, { vocabSize: 1000 })
    const e = await refused([`model.from=${dir}`])
    expect(e._tag).toBe("ModelSourceError")
    expect(oneLine(e.message)).toBe(
      `${join(dir, "config.json")}: key vocab_size: 1000 is smaller than ${join(dir, "tokenizer.json")}'s id space (keys model.vocab and added_tokens), 151669 ids (highest 151668): the checkpoint has no embedding row for ids the tokenizer writes`
    )
  }, 60_000)

  it("a model.* key that differs from config.json's, and a maxSeqLen beyond max_position_embeddings", async () => {
    const dir = join(tempDir("hf-keys"), "m")
    await writeQwen3(dir, { tokenizer: false })
    const e = await refused([`model.from=${dir}`, "model.dModel=64", `tokenizer.dir=${qwen3TokenizerDir}`])
    expect(e._tag).toBe("ModelSourceError")
    expect(oneLine(e.message)).toBe(`${join(dir, "config.json")}: key hidden_size: the recipe's model.dModel is 64 but config.json's hidden_size is 32 (leave model.dModel out to take the file's)`)
    const long = await refused([`model.from=${dir}`, "model.maxSeqLen=50000", `tokenizer.dir=${qwen3TokenizerDir}`])
    expect(oneLine(long.message)).toMatch(new RegExp(`^${join(dir, "config.json")}: key max_position_embeddings: `))
  }, 60_000)
})
