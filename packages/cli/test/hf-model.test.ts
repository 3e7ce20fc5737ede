/**
 * Bring your own model through the built `r1flow`, as a user runs it: `r1flow run r1-zero-hf --set
 * model.from=<dir>` on a random tiny Qwen3-layout model with the real Qwen3 tokenizer (151k ids), then
 * `r1flow export` of the run, reloaded with identical weights; a refused directory prints one line; a run
 * on r1flow's own compact tokenizer exports with a note that no tokenizer files are written.
 */
import { Checkpoint, Transformer } from "@r1flow/model"
import { Effect } from "effect"
import { readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { patchConfig, writeQwen3 } from "./support/hf.js"
import { r1flow, tempDir, tempRun, tinyRecipe } from "./support/launch.js"

const tiny = (runs: string, from: string) => [
  `runsDir=${runs}`, `model.from=${from}`, "model.maxSeqLen=160", "backend=wasm", "task.train=6", "task.test=2", "checkpoint.every=1",
  "stages.0.config.sampling.maxNewTokens=4", "stages.1.config.steps=2", "stages.1.config.promptsPerStep=2", "stages.1.config.groupSize=2",
  "stages.1.config.sampling.maxNewTokens=6", "stages.1.config.evalEvery=0", "stages.2.config.sampling.maxNewTokens=4"
].flatMap((s) => ["--set", s])

const run = <A, E>(e: Effect.Effect<A, E>) => Effect.runPromise(e)

describe("r1flow run r1-zero-hf and r1flow export", () => {
  it("trains a tiny Qwen3 from its HF directory and exports it back, weights identical", async () => {
    const base = tempDir("cli-hf")
    const model = join(base, "qwen3-tiny")
    await writeQwen3(model)
    // A relative --set path resolves from the working directory.
    const r = r1flow(["run", "r1-zero-hf", ...tiny(join(base, "runs"), "qwen3-tiny")], { cwd: base, timeout: 300_000 })
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0)
    expect(r.stdout).toMatch(/tokenizer: .*qwen3-tiny on tiktoken/)
    const dir = /run directory: (\S+)/.exec(r.stdout)![1]
    const out = join(base, "out")
    const e = r1flow(["export", dir, out, "--dtype", "float32", "--max-shard-size", "4MB"], { timeout: 120_000 })
    expect(e.status, `${e.stdout}\n${e.stderr}`).toBe(0)
    expect(e.stdout).toMatch(/qwen3, float32, 2 weight files/)
    expect(readdirSync(out).sort()).toEqual([
      "config.json", "generation_config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json"
    ])
    const latest = readFileSync(join(dir, "checkpoints", "latest"), "utf8").trim()
    const policy = await run(Checkpoint.load(join(dir, "checkpoints", latest, "policy")))
    const back = await run(Checkpoint.loadHf(out, { trainable: false }))
    const want = await Transformer.toArrays(policy), got = await Transformer.toArrays(back.model)
    policy.dispose()
    back.model.dispose()
    for (const [name, w] of want) expect(w.findIndex((x, i) => got.get(name)![i] !== x), name).toBe(-1)
  }, 400_000)

  it("a directory with an unsupported model_type is refused in one line naming file and key", async () => {
    const base = tempDir("cli-hf-bad")
    const model = join(base, "m")
    await writeQwen3(model)
    patchConfig(model, { model_type: "phi3", architectures: ["Phi3ForCausalLM"] })
    const r = r1flow(["run", "r1-zero-hf", "--set", `model.from=${model}`, "--set", `runsDir=${join(base, "runs")}`], { timeout: 120_000 })
    expect(r.status).toBe(1)
    expect(r.stderr.trim()).toBe(`r1flow: ModelSourceError: ${join(model, "config.json")}: key model_type: model_type "phi3" is not supported (supported: llama, mistral, qwen2, qwen3)`)
    const missing = r1flow(["run", "r1-zero-hf", "--set", `runsDir=${join(base, "runs")}`], { timeout: 120_000 })
    expect(missing.status).toBe(1)
    expect(missing.stderr).toMatch(/model\.from: empty: set model\.from=<dir>/)
  }, 200_000)

  it("a run on r1flow's own compact tokenizer exports float32 weights and says no tokenizer files are written", () => {
    const { file, base } = tempRun("cli-export-compact", tinyRecipe())
    const r = r1flow(["run", file], { timeout: 120_000 })
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0)
    const dir = /run directory: (\S+)/.exec(r.stdout)![1]
    const out = join(base, "out")
    const e = r1flow(["export", dir, out], { timeout: 120_000 })
    expect(e.status, `${e.stdout}\n${e.stderr}`).toBe(0)
    expect(e.stdout).toMatch(/no Hugging Face tokenizer files written: the run's tokenizer compact:cl100k_base:\d+ is r1flow's own \(tokenizer.kind compact\)/)
    expect(readdirSync(out).sort()).toEqual(["config.json", "generation_config.json", "model.safetensors"])
    expect(JSON.parse(readFileSync(join(out, "config.json"), "utf8"))).toMatchObject({ model_type: "llama", torch_dtype: "float32" })
  }, 200_000)
})
