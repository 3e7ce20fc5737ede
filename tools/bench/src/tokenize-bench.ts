/**
 * Tokenizer throughput: the Arrow tokenize stage against bare tiktoken, in one process.
 *
 * Run (from the repo root):
 *
 *   npx nx run @r1flow/bench:build && node tools/bench/dist/tokenize-bench.js [rounds]
 *
 * (equivalently, without the Nx graph: `npx tsc --build tools/bench/tsconfig.lib.json` then the same `node` line.)
 *
 * For each encoding (cl100k_base, and a compact vocabulary of 512 built from the questions) it
 * tokenizes every GSM8K train question (`../shared/datasets/gsm8k/train.jsonl` next to the repo
 * root) two ways, alternating, `rounds` times (default 9):
 *   - bare:  `tiktoken.encode_ordinary(question)` over the questions as JS strings;
 *   - stage: `Tokenize.tokenizeColumn("prompt")` over Arrow batches of 512 rows (reads the Utf8
 *            buffer, writes the flat List<Int32> column plus lengths and truncation flags).
 * Times are this process's CPU time, so neighbours on a busy machine do not skew the ratio.
 * It prints the median tokens/s of each and stage/bare (target ≥ 0.9; the ratio of best times too,
 * as a check on noise), then the same for decoding (bare `decode` + UTF-8 to string against
 * `Tokenize.detokenizeColumn`, which writes the Utf8 column from the bytes).
 */
import { get_encoding, Tiktoken } from "@dqbd/tiktoken"
import { Batch, Columns } from "@r1flow/core"
import { Compact, Tokenize, Tokenizer, type Codec } from "@r1flow/tokenizer"
import { Field, Schema, Utf8, type Int32, type List, type RecordBatch, type Vector } from "apache-arrow"
import { Effect } from "effect"
import { existsSync, readFileSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { median } from "./Timing.js"

const BATCH_ROWS = 512

const repoRoot = (): string => {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, "nx.json"))) {
    const up = dirname(dir)
    if (up === dir) throw new Error("cannot find the repo root (no nx.json above this script)")
    dir = up
  }
  return dir
}

const fmt = (x: number): string => `${(x / 1e6).toFixed(3)} M tok/s`

const Prompts = new Schema([new Field("prompt", new Utf8(), false)])

/**
 * Alternates `a` and `b` `rounds` times (after one warm-up each); returns the median and best
 * seconds of each. Seconds are this process's CPU time (user + system), not wall time: on a shared
 * machine wall time mostly measures the neighbours, CPU time measures the work.
 */
const race = (rounds: number, a: () => number, b: () => number) => {
  const ta: Array<number> = [], tb: Array<number> = []
  let tokensA = a(), tokensB = b()
  const cpu = (f: () => number): [number, number] => {
    const start = process.cpuUsage()
    const n = f()
    const used = process.cpuUsage(start)
    return [n, (used.user + used.system) / 1e6]
  }
  for (let r = 0; r < rounds; r++) {
    let t: number
    ;[tokensA, t] = cpu(a)
    ta.push(t)
    ;[tokensB, t] = cpu(b)
    tb.push(t)
  }
  return { a: median(ta), b: median(tb), bestA: Math.min(...ta), bestB: Math.min(...tb), tokensA, tokensB }
}

const benchOne = (label: string, codec: Codec, bare: Tiktoken, questions: Array<string>, batches: Array<RecordBatch>, rounds: number) => {
  const tokenize = Tokenize.tokenizeColumn("prompt")
  const tokenized: Array<RecordBatch> = []

  const enc = race(
    rounds,
    () => {
      let n = 0
      for (const q of questions) n += bare.encode_ordinary(q).length
      return n
    },
    () => {
      let n = 0
      tokenized.length = 0
      for (const b of batches) {
        const out = Effect.runSync(Effect.provideService(tokenize.run(b), Tokenizer, codec))
        tokenized.push(out)
        n += Columns.int32List(out.getChild("prompt_ids") as Vector<List<Int32>>).values.length
      }
      return n
    }
  )
  if (enc.tokensA !== enc.tokensB) throw new Error(`${label}: the stage produced ${enc.tokensB} tokens, bare tiktoken ${enc.tokensA}`)
  const bareRate = enc.tokensA / enc.a, stageRate = enc.tokensB / enc.b
  console.log(
    `${label.padEnd(24)} encode  bare ${fmt(bareRate)}  stage ${fmt(stageRate)}  stage/bare ${(stageRate / bareRate).toFixed(3)}` +
      `  (best-of: ${(enc.bestA / enc.bestB).toFixed(3)}; ${enc.tokensA} tokens)`
  )

  const idRows = questions.map((q) => bare.encode_ordinary(q))
  const detokenize = Tokenize.detokenizeColumn({ ids: "prompt_ids", text: "decoded" })
  const decoder = new TextDecoder()
  const dec = race(
    rounds,
    () => {
      let n = 0
      for (const ids of idRows) {
        decoder.decode(bare.decode(ids))
        n += ids.length
      }
      return n
    },
    () => {
      let n = 0
      for (const b of tokenized) {
        Effect.runSync(Effect.provideService(detokenize.run(b), Tokenizer, codec))
        n += b.getChild("prompt_ids")!.data[0].children[0].length
      }
      return n
    }
  )
  const bareDec = dec.tokensA / dec.a, stageDec = dec.tokensB / dec.b
  console.log(
    `${label.padEnd(24)} decode  bare ${fmt(bareDec)}  stage ${fmt(stageDec)}  stage/bare ${(stageDec / bareDec).toFixed(3)}  (best-of: ${(dec.bestA / dec.bestB).toFixed(3)})`
  )
  return stageRate / bareRate
}

const main = () => {
  const rounds = Number(process.argv[2] ?? 9)
  const file = resolve(repoRoot(), "..", "shared", "datasets", "gsm8k", "train.jsonl")
  if (!existsSync(file)) {
    console.error(`GSM8K train split not found at ${file}; nothing to benchmark`)
    process.exit(2)
  }
  const questions = readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => (JSON.parse(l) as { question: string }).question)
  const batches: Array<RecordBatch> = []
  for (let i = 0; i < questions.length; i += BATCH_ROWS) {
    batches.push(Batch.fromData(Prompts, { prompt: Columns.makeUtf8(questions.slice(i, i + BATCH_ROWS)) }))
  }
  const bytes = questions.reduce((n, q) => n + Buffer.byteLength(q), 0)
  console.log(`GSM8K train: ${questions.length} questions, ${(bytes / 1e6).toFixed(2)} MB, ${batches.length} batches of ≤ ${BATCH_ROWS}; median of ${rounds} alternating rounds; node ${process.version}`)

  const ratios: Array<number> = []
  {
    const codec = Tokenizer.makeStandard("cl100k_base")
    const bare = get_encoding("cl100k_base")
    ratios.push(benchOne("cl100k_base", codec, bare, questions, batches, rounds))
    codec.free()
    bare.free()
  }
  {
    const t = performance.now()
    const vocab = Compact.build({ base: "cl100k_base", corpus: questions, size: 512 })
    console.log(`compact vocabulary of ${vocab.manifest.size} built from ${questions.length} questions in ${(performance.now() - t).toFixed(0)} ms`)
    const codec = Tokenizer.makeCompact(vocab)
    const bare = new Tiktoken(vocab.ranks, { ...vocab.manifest.specialTokens }, vocab.manifest.patStr)
    ratios.push(benchOne("compact:cl100k_base:512", codec, bare, questions, batches, rounds))
    codec.free()
    bare.free()
  }
  const worst = Math.min(...ratios)
  console.log(`encode stage/bare, worst: ${worst.toFixed(3)} (target ≥ 0.9): ${worst >= 0.9 ? "met" : "NOT met"}`)
}

main()
