/**
 * Distributed rollout: GRPO step time and rollout throughput with 0, 1, 2 local workers (does sampling on
 * workers overlap the update on this machine?), and a simulated scaling curve over 1…16 throttled workers
 * with the staleness distribution and where the trainer becomes the bottleneck.
 *
 * Run (from the repository root; needs the built CLI, `npx nx run @r1flow/cli:build`, and `nats-server` on
 * PATH or in /usr/sbin, else it says so and exits):
 *
 *   npx tsc -b tools/bench/tsconfig.lib.json && node tools/bench/dist/distributed-bench.js \
 *     [--quick] [--part overlap|scaling|both] [--sleep-ms S] [--iterations μ]
 *
 * Every configuration is a real `r1flow run` of a generated recipe (written with its reward plugin to a temp
 * folder) in a child process, with `distributed: { workers: N, maxStaleness: m }` (m ≥ 1 adds
 * `update.loss.tisCap: 2`, which the config requires then); the run starts its own nats-server and N local
 * `r1flow worker` processes. Model: the demo's (d 128, 3 layers, 4/2 heads, SwiGLU 352, vocab 512; 0.62M
 * parameters), random init, wasm backend, the arithmetic task. Only the GRPO stage runs.
 *
 * 1. Overlap (CPU-bound rollouts): 8 prompts × G 8, 48 new tokens, μ 1, a reward that costs nothing; 0 workers
 *    (drawn in the trainer, group by group), 1 and 2 workers at maxStaleness 0 and 1. 0 is synchronous (draw,
 *    then update); 1 lets workers draw the next step's groups during the update.
 * 2. Scaling (throttled workers): 16 prompts × G 4, 8 new tokens, μ 8 (a heavier update, generation kept
 *    cheap), and the reward `sleep` that waits S ms (default 250) per call, i.e. per group: a worker's group
 *    time is then mostly sleep, as a slower or remote machine's would be, so 16 workers on 2 cores are
 *    meaningful. Workers 1, 2, 4, 8, 16 at maxStaleness 1, and 1, 4, 16 at 0 for comparison (16 steps a run);
 *    `--quick`: 1, 4, 16 at maxStaleness 1 (12 steps). Overlap runs take 10 steps (`--quick`: 4).
 *
 * Columns. step s: median over steps 2…n of the wall time between two steps' `perf.jsonl` lines (step 1
 * holds the start-up: workers launching, the first weights), counting only steps begun once every worker was up. update s: median of the update's own time,
 * tokens · μ / `perf/throughput` (docs/metrics.md). completions/s and tokens/s: completions (P · G) and
 * generated tokens (Σ completion_length, mean per step) over the median step. staleness: share of all
 * rollout rows at each staleness (the rollouts parquet's `staleness` column, read with parquet-wasm).
 * groups per worker: min–max over the local workers of the groups each drew (from their logs), and how many
 * drew any. start s / all up s: from launch to the end of step 1 / to the last worker's "up" log line; steps
 * that began before that are left out of the medians too (16 workers on 2 cores take longer to start than a
 * few steps; a step time starred * had no step after it, so it holds start-up: run more steps).
 * draw floor s (scaling): ⌈P / N⌉ · S, the sleep a step's groups
 * cost at best when the N workers share them evenly. The bottleneck line (`RolloutScaling.saturation`): the
 * smallest N from which more workers gain under 10 % of the step, and whether the update is ≥ half of the
 * step there (trainer-bound) or not (the draw's own floor or the shared CPUs bind).
 *
 * Caveat: the machine has 2 cores. Workers, the trainer and nats-server share them, so in part 1 every
 * worker's sampling takes CPU from the trainer's update: overlap can only show as far as one process leaves
 * a core idle (the update and the decode are not perfectly parallel), and at maxStaleness 1 the update's own
 * time grows while a worker samples beside it. In part 2 every worker fetches and loads each version's
 * weights and samples its groups on the same 2 cores, so past a few workers those per-worker costs add up
 * here (a `--quick` run on the busy machine had 16 workers slower than 4), where on separate machines they
 * would not. Other jobs on a shared machine make every figure noisy; the bench prints the load average at start.
 */
import { spawn, spawnSync } from "node:child_process"
import { accessSync, constants, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import os from "node:os"
import path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { tableFromIPC } from "apache-arrow"
import { readParquet } from "parquet-wasm"
import * as RolloutScaling from "./RolloutScaling.js"

/** The GRPO stage's sizes for one part of the bench. */
interface Shape {
  readonly promptsPerStep: number
  readonly groupSize: number
  readonly maxNewTokens: number
  /** μ: passes of the update over each batch. */
  readonly iterations: number
  /** The reward's sleep per call (per group), ms. */
  readonly sleepMs: number
  readonly steps: number
}

/** One run: a shape at a worker count and staleness bound. */
interface Spec {
  readonly shape: Shape
  readonly workers: number
  readonly maxStaleness: number
}

/** What one run measured (or why it has no figures). */
interface Measured {
  readonly spec: Spec
  readonly step: number
  readonly update: number
  readonly completionsPerSecond: number
  readonly tokensPerSecond: number
  readonly staleness: ReturnType<typeof RolloutScaling.histogram>
  readonly startSeconds: number
  /** Launch to the last worker up (Infinity when one never logged it). */
  readonly upSeconds: number
  /** Whether some measured step began after every worker was up (else the medians hold start-up). */
  readonly steady: boolean
  /** Groups each local worker drew, over the whole run. */
  readonly groupsPerWorker: ReadonlyArray<number>
}

const here = path.dirname(fileURLToPath(import.meta.url))
const r1flow = path.resolve(here, "../../../packages/cli/bin/r1flow.mjs")
const require = createRequire(import.meta.url)
const RUN_TIMEOUT_MS = 20 * 60_000

/** `nats-server` on PATH, /usr/sbin or /usr/local/sbin; undefined when absent. */
const natsServer = (): string | undefined =>
  [...(process.env["PATH"] ?? "").split(path.delimiter), "/usr/sbin", "/usr/local/sbin"].filter((d) => d !== "").map((d) => path.join(d, "nats-server")).find((p) => {
    try {
      accessSync(p, constants.X_OK)
      return true
    } catch {
      return false
    }
  })

/**
 * The reward plugin: completion length (so advantages vary and every update moves the weights), after
 * sleeping `ms` per call. An async sleep, not a busy wait: a throttled worker must leave the CPU to others.
 */
const sleepPlugin = () => `import { Schema } from ${JSON.stringify(pathToFileURL(require.resolve("effect")).href)}
export default { kind: "reward", name: "sleep", version: "1.0.0", description: "completion length, after sleeping config.ms per call", config: Schema.Struct({ ms: Schema.Number }),
  make: (c) => ({ score: async (input) => { await new Promise((r) => setTimeout(r, c.ms)); return Float32Array.from(input.completions, (x) => x.length) } }) }
`

/** The recipe of one run (its `runsDir` under `base`). */
const recipe = (s: Spec, base: string) => ({
  name: `dbench-w${s.workers}-s${s.maxStaleness}`,
  seed: 1,
  backend: "wasm",
  runsDir: path.join(base, "runs"),
  task: { kind: "arithmetic", digits: [1, 2], ops: ["+"], train: 1024, test: 2 },
  corpus: { count: 16 },
  tokenizer: { kind: "compact", base: "cl100k_base", size: 512 },
  model: { dModel: 128, nLayers: 3, nHeads: 4, nKvHeads: 2, dFf: 352, maxSeqLen: 160 },
  checkpoint: { every: 0, keep: 1 },
  stages: [{
    stage: "grpo",
    config: {
      steps: s.shape.steps, promptsPerStep: s.shape.promptsPerStep, groupSize: s.shape.groupSize,
      sampling: { maxNewTokens: s.shape.maxNewTokens, temperature: 1 },
      rewards: [{ plugin: "./plugins/sleep.mjs", config: { ms: s.shape.sleepMs } }],
      update: { iterations: s.shape.iterations, optimizer: { learningRate: 1e-4 }, ...(s.maxStaleness >= 1 ? { loss: { tisCap: 2 } } : {}) },
      distributed: { workers: s.workers, maxStaleness: s.maxStaleness }
    }
  }]
})

/** One step's rollouts: generated tokens, all tokens (prompt + completion) and each row's staleness. */
const rollouts = (dir: string, step: number) => {
  const file = path.join(dir, "rollouts", `step-${String(step).padStart(6, "0")}.parquet`)
  const t = tableFromIPC(readParquet(readFileSync(file)).intoIPCStream())
  const column = (name: string) => {
    const c = t.getChild(name)
    if (c === null) throw new Error(`${file}: no column ${name}`)
    return Array.from(c.toArray() as Int32Array)
  }
  const completion = column("completion_length").reduce((a, b) => a + b, 0)
  return { completion, tokens: completion + column("prompt_length").reduce((a, b) => a + b, 0), staleness: column("staleness") }
}

/** The text of each local worker's log (`<run>/nats/logs/local-k.log`), those that exist so far. */
const workerLogs = (dir: string): Array<string> => {
  const logs = path.join(dir, "nats", "logs")
  return existsSync(logs) ? readdirSync(logs).filter((f) => f.endsWith(".log")).map((f) => readFileSync(path.join(logs, f), "utf8")) : []
}

/** A finished run: its directory, launch time, when every worker was up and when each step ended (ms). */
interface Launched {
  readonly dir: string
  readonly startMs: number
  readonly upMs: number
  readonly endedAtMs: Array<number>
}

/**
 * Runs `r1flow run` on the recipe of `s` and notes when each `perf.jsonl` line appears (a step's end) and
 * when the last worker logged that it was up, by polling; resolves with those times, or rejects with the
 * run's output.
 */
const launch = (s: Spec, base: string) => new Promise<Launched>((resolve, reject) => {
  mkdirSync(path.join(base, "plugins"))
  writeFileSync(path.join(base, "plugins", "sleep.mjs"), sleepPlugin())
  const file = path.join(base, "recipe.json")
  writeFileSync(file, JSON.stringify(recipe(s, base)))
  const startMs = performance.now()
  const child = spawn(process.execPath, [r1flow, "run", file], { stdio: ["ignore", "pipe", "pipe"] })
  let out = "", dir: string | undefined, size = 0, upMs = s.workers === 0 ? startMs : Infinity
  const endedAtMs: Array<number> = []
  child.stdout.on("data", (d: Buffer) => (out += d.toString("utf8")))
  child.stderr.on("data", (d: Buffer) => (out += d.toString("utf8")))
  const poll = () => {
    dir ??= /run directory: (\S+)/.exec(out)?.[1]
    if (dir !== undefined && upMs === Infinity && workerLogs(dir).filter((l) => l.includes("(pid ")).length >= s.workers) upMs = performance.now()
    const perf = dir === undefined ? "" : path.join(dir, "perf.jsonl")
    if (perf === "" || !existsSync(perf) || statSync(perf).size === size) return
    const text = readFileSync(perf, "utf8")
    size = Buffer.byteLength(text)
    const lines = text.split("\n").filter((l) => l.endsWith("}")).length
    const now = performance.now()
    while (endedAtMs.length < lines) endedAtMs.push(now)
  }
  const timer = setInterval(poll, 20)
  const killer = setTimeout(() => child.kill("SIGTERM"), RUN_TIMEOUT_MS)
  child.once("exit", (code, signal) => {
    clearInterval(timer)
    clearTimeout(killer)
    poll()
    if (code === 0 && dir !== undefined) resolve({ dir, endedAtMs, startMs, upMs })
    else reject(new Error(`run with ${s.workers} worker(s), maxStaleness ${s.maxStaleness} failed (exit ${code ?? signal}):\n${out.slice(-3000)}`))
  })
})

/** Runs `s` (in a temp folder, removed after) and reduces it to its medians and distribution. */
const measure = async (s: Spec): Promise<Measured> => {
  const base = mkdtempSync(path.join(os.tmpdir(), "r1flow-dbench-"))
  return launch(s, base).then((r) => reduce(s, r)).finally(() => rmSync(base, { recursive: true, force: true }))
}

/** A finished run's figures from its perf.jsonl, its rollouts and the step end times. */
const reduce = (s: Spec, { dir, endedAtMs, startMs, upMs }: Launched): Measured => {
  if (endedAtMs.length !== s.shape.steps) throw new Error(`${dir}: saw ${endedAtMs.length} perf.jsonl lines for ${s.shape.steps} steps`)
  const perf = readFileSync(path.join(dir, "perf.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as Record<string, number>)
  const steps = Array.from({ length: s.shape.steps }, (_, i) => rollouts(dir, i + 1))
  const steady = RolloutScaling.steadySeconds(endedAtMs, upMs)
  const step = RolloutScaling.median(steady.seconds)
  const groups = workerLogs(dir).map((l) => (l.match(/: group \d+ at version/g) ?? []).length)
  const later = steps.slice(1)
  const update = RolloutScaling.median(later.map((r, i) => RolloutScaling.updateSeconds(perf[i + 1]["perf/throughput"], r.tokens, s.shape.iterations)))
  const generated = later.reduce((n, r) => n + r.completion, 0) / later.length
  return {
    spec: s,
    step,
    update,
    completionsPerSecond: (s.shape.promptsPerStep * s.shape.groupSize) / step,
    tokensPerSecond: generated / step,
    staleness: RolloutScaling.histogram(steps.flatMap((r) => r.staleness)),
    startSeconds: (endedAtMs[0] - startMs) / 1000,
    upSeconds: (upMs - startMs) / 1000,
    steady: steady.steady,
    groupsPerWorker: groups
  }
}

const f2 = (x: number) => x.toFixed(2)
const f0 = (x: number) => x.toFixed(0)

/** Groups per worker as `min–max (k of N drew)`; `–` for the in-process draw. */
const spread = (g: ReadonlyArray<number>): string =>
  g.length === 0 ? "–" : `${Math.min(...g)}–${Math.max(...g)} (${g.filter((n) => n > 0).length} of ${g.length} drew)`

/** The cells every table shares after the first columns. */
const cells = (m: Measured): string =>
  `${f2(m.completionsPerSecond)} | ${f0(m.tokensPerSecond)} | ${RolloutScaling.formatHistogram(m.staleness)} | ${spread(m.groupsPerWorker)} | ${f2(m.startSeconds)} / ${Number.isFinite(m.upSeconds) ? f2(m.upSeconds) : "never"} |`

/** Step seconds, starred when no measured step began after every worker was up. */
const stepCell = (m: Measured): string => `${f2(m.step)}${m.steady ? "" : "*"}`

const SHARED = "completions/s | tokens/s | staleness | groups per worker | start s / all up s |"

/** The overlap table: one row per run. */
const overlapTable = (rows: ReadonlyArray<Measured>): Array<string> => [
  `| workers | maxStaleness | step s | update s | ${SHARED}`,
  "|---|---|---|---|---|---|---|---|---|",
  ...rows.map((m) => `| ${m.spec.workers} | ${m.spec.maxStaleness} | ${stepCell(m)} | ${f2(m.update)} | ${cells(m)}`)
]

/** The scaling table, with the draw's sleep floor ⌈P / N⌉ · S per row. */
const scalingTable = (rows: ReadonlyArray<Measured>): Array<string> => [
  `| workers | maxStaleness | step s | update s | draw floor s | ${SHARED}`,
  "|---|---|---|---|---|---|---|---|---|---|",
  ...rows.map((m) => {
    const floor = (Math.ceil(m.spec.shape.promptsPerStep / m.spec.workers) * m.spec.shape.sleepMs) / 1000
    return `| ${m.spec.workers} | ${m.spec.maxStaleness} | ${stepCell(m)} | ${f2(m.update)} | ${f2(floor)} | ${cells(m)}`
  })
]

/** The bottleneck sentence for the scaling rows at one staleness bound. */
const bottleneck = (rows: ReadonlyArray<Measured>, maxStaleness: number): string => {
  const at = rows.filter((m) => m.spec.maxStaleness === maxStaleness)
  if (at.length < 2) return `maxStaleness ${maxStaleness}: too few worker counts to say`
  const s = RolloutScaling.saturation(at.map((m) => ({ workers: m.spec.workers, step: m.step, update: m.update })))
  const why = s.bound === "trainer"
    ? "the trainer is the bottleneck: the update is most of the step, so more workers cannot shorten it"
    : "the step is not trainer-bound there: what is left is the draw's own floor (one group's sleep and sampling once N reaches the groups per step) or the two shared cores"
  const caveat = at.every((m) => m.steady) ? "" : " (a starred step time holds start-up: take more steps)"
  return `maxStaleness ${maxStaleness}: more workers stop paying (< 10% faster) from ${s.workers} worker(s); the update is ${f0(100 * s.updateShare)}% of the step there; ${why}${caveat}`
}

const argv = process.argv.slice(2)
const option = (name: string, fallback: number) => {
  const i = argv.indexOf(name)
  const v = i >= 0 && i + 1 < argv.length ? Number(argv[i + 1]) : fallback
  if (!Number.isInteger(v) || v < 0) throw new RangeError(`${name} must be a non-negative integer, got ${argv[i + 1]}`)
  return v
}

const main = async () => {
  const nats = natsServer()
  if (nats === undefined) {
    console.log("distributed-bench: nats-server not found (PATH, /usr/sbin, /usr/local/sbin); skipping (Debian: apt-get install nats-server)")
    return
  }
  if (!existsSync(path.resolve(here, "../../../packages/cli/dist/main.js"))) throw new Error("the CLI is not built: run `npx nx run @r1flow/cli:build` first")
  const quick = argv.includes("--quick")
  const i = argv.indexOf("--part"), part = i >= 0 ? argv[i + 1] : "both"
  if (!["overlap", "scaling", "both"].includes(part)) throw new RangeError(`--part must be overlap, scaling or both, got "${part}"`)
  // Scaling runs take more steps: 16 workers on 2 cores take about a minute to be all up, and only the
  // steps begun after that count.
  const overlap: Shape = { promptsPerStep: 8, groupSize: 8, maxNewTokens: 48, iterations: 1, sleepMs: 0, steps: quick ? 4 : 10 }
  const scaling: Shape = { promptsPerStep: 16, groupSize: 4, maxNewTokens: 8, iterations: option("--iterations", 8), sleepMs: option("--sleep-ms", 250), steps: quick ? 12 : 16 }
  const version = spawnSync(nats, ["--version"], { encoding: "utf8" }).stdout.trim()
  console.log(`machine: ${os.availableParallelism()} cores, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, load average ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}; ${version}; shared machines make every figure noisy`)
  console.log(`${quick ? "--quick: " : ""}${overlap.steps} (overlap) and ${scaling.steps} (scaling) GRPO steps a run; step 1 and steps begun before every worker was up are left out of the medians`)

  if (part !== "scaling") {
    const specs: Array<Spec> = [{ shape: overlap, workers: 0, maxStaleness: 0 }, ...[1, 2].flatMap((w) => [0, 1].map((m) => ({ shape: overlap, workers: w, maxStaleness: m })))]
    const rows: Array<Measured> = []
    for (const s of specs) {
      rows.push(await measure(s))
      console.log(`  overlap: ${s.workers} worker(s), maxStaleness ${s.maxStaleness}: step ${stepCell(rows.at(-1)!)} s`)
    }
    console.log(`\n### Overlap: ${overlap.promptsPerStep} prompts × G ${overlap.groupSize}, ${overlap.maxNewTokens} new tokens, μ ${overlap.iterations}, CPU-bound rollouts\n`)
    for (const l of overlapTable(rows)) console.log(l)
    console.log("")
  }

  if (part !== "overlap") {
    // maxStaleness 1 is the curve; 0 (draw, then update: no overlap) at a few counts beside it.
    const specs: Array<Spec> = [
      ...(quick ? [1, 4, 16] : [1, 2, 4, 8, 16]).map((w) => ({ shape: scaling, workers: w, maxStaleness: 1 })),
      ...(quick ? [] : [1, 4, 16]).map((w) => ({ shape: scaling, workers: w, maxStaleness: 0 }))
    ]
    const bounds = quick ? [1] : [1, 0]
    const rows: Array<Measured> = []
    for (const s of specs) {
      rows.push(await measure(s))
      console.log(`  scaling: ${s.workers} worker(s), maxStaleness ${s.maxStaleness}: step ${stepCell(rows.at(-1)!)} s`)
    }
    console.log(`\n### Scaling: ${scaling.promptsPerStep} prompts × G ${scaling.groupSize}, ${scaling.maxNewTokens} new tokens, μ ${scaling.iterations}, reward sleeps ${scaling.sleepMs} ms a group\n`)
    for (const l of scalingTable(rows)) console.log(l)
    console.log("")
    for (const m of bounds) console.log(bottleneck(rows, m))
  }
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
