/**
 * GRPO training and generation at real model sizes (random weights), ours beside a PyTorch twin: train
 * tokens/s, generation tokens/s, peak RSS and peak tensor bytes per shape × mode.
 *
 * Run (from the repository root):
 *
 *   npx tsc -b tools/bench/tsconfig.lib.json && node tools/bench/dist/llm-bench.js \
 *     [--shape smollm2-135m|qwen2.5-0.5b|qwen2.5-1.5b|all] [--mode full|lora|both] [--backend wasm|cpu|auto] \
 *     [--steps N] [--vs-torch] [--plan]
 *
 * Shapes (`LlmPlan.SHAPES`): smollm2-135m (30 layers, width 576, 9/3 heads, SwiGLU 1536, vocab 49,152, θ 1e5,
 * ε 1e-5, no biases), qwen2.5-0.5b (24, 896, 14/2, 4,864, 151,936, q/k/v biases, θ 1e6, ε 1e-6) and
 * qwen2.5-1.5b (28, 1,536, 12/2, 8,960, 151,936, same), all with tied embeddings, seeded N(0, 0.02²) weights.
 * Modes: full (every weight trained; the reference is a frozen copy) and lora (rank 16, α 32 on q, k, v, o,
 * gate, up, down of every block; the reference is the base view, `Lora.disabled`).
 *
 * One training step, as GRPO's update runs it: the reference pass (log-probs, no gradients), then the policy's
 * `LogProbs.tokenLogProbs` under `tf.variableGrads`, `Loss.compute` (grpo aggregation, ε 0.2, β 0.04; made-up
 * advantages N(0, 1); π_old = π_ref, so ρ = 1 on the first step), the backward and AdamW (lr 1e-5, clip 1)
 * over the trainable weights, through `Train.optimizerStep`. Rows: 4 × (64 prompt + 64 completion tokens); the
 * loss masks the 64 completion tokens. Train tokens/s counts ALL row tokens (4 · 128 = 512 a step: every one is
 * run through both passes), the same for PyTorch; completion tokens/s is half of it. Generation: 32 prompts of
 * 32 random tokens, 128 new tokens each, temperature 1, no stop ids (`Generate.sample`); tokens/s counts the
 * generated tokens. After one warm-up (a training step; a 2-token generation), the median of `--steps` runs.
 *
 * FLOP accounting (`LlmPlan`): forward 2·M + 4·L·H·hd·S per token, M the matmul parameters incl. the tied head;
 * a full step is 4 forwards (reference 1 + policy forward 1 + backward 2), a LoRA step 3 (the backward propagates
 * activation gradients through the frozen weights but computes no weight gradient for them); decoding attends
 * over the mean cache length 32 + 64.
 *
 * Each shape × mode runs in its own child process (so its peak RSS is its own, and an OOM loses one row, not
 * the table), and so does each PyTorch twin (`tools/bench/torch/llm_bench.py`, Debian's python3-torch,
 * OMP_WAIT_POLICY=PASSIVE, the same thread count). Peak RSS is the child's VmHWM; peak tensor bytes is
 * `tf.profile`'s peak (tfjs's count, views counted again) over the warm-up training step (the larger phase at these shapes: `LlmPlan`'s
 * activations exceed the decode cache; a whole generation is too many kernels for `tf.profile`). Before anything runs, each
 * configuration is estimated (`LlmPlan.plan`): one that does not fit the machine's memory is reported as such
 * and skipped, ours and PyTorch's alike; `--backend auto` picks wasm or cpu from the estimate
 * (`Backend.choose`). `--plan` prints the estimates and exits.
 */
import * as tf from "@tensorflow/tfjs"
import { spawnSync } from "node:child_process"
import { readFileSync } from "node:fs"
import os from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { Effect, Schema } from "effect"
import { Backend } from "@r1flow/backend"
import { Rng } from "@r1flow/core"
import { Guard, Loss, Optimizer, Train } from "@r1flow/grpo"
import { Generate, LogProbs, Lora, Transformer } from "@r1flow/model"
import * as LlmPlan from "./LlmPlan.js"
import { median } from "./Timing.js"

/** Tokens per wall second and per CPU second. */
interface Rate { readonly wall: number; readonly cpu: number }

/** What one configuration measured (ours or PyTorch's). */
interface Measured {
  readonly train: Rate
  readonly generate: Rate
  /** Peak resident set of the process, bytes. */
  readonly peakRss: number
  /** Peak bytes held in tensors by tfjs's count (a view such as a reshape counts again; ours only). */
  readonly peakTensorBytes?: number
  /** The wasm heap at the end (it only grows, by doubling: the real high-water mark of tensor memory on wasm). */
  readonly wasmHeapBytes?: number
  readonly backend: string
}

const OPTIMIZER = { learningRate: 1e-5, beta1: 0.9, beta2: 0.999, weightDecay: 0.01, maxGradNorm: 1 }
const LOSS = { lossType: "grpo", epsilon: 0.2, beta: 0.04 }
const RESULT = "LLM-BENCH-RESULT "

/** Peak resident set of this process in bytes (VmHWM; maxRSS where /proc is absent). */
const peakRss = (): number => {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", { encoding: "utf8", flag: "r" }))
  return m === null ? process.resourceUsage().maxRSS * 1024 : Number(m[1]) * 1024
}

/** Wall and CPU seconds of `self`. */
const timed = <A, E>(self: Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const t0 = performance.now(), c0 = process.cpuUsage()
    const value = yield* self
    const c = process.cpuUsage(c0)
    return { value, wall: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6 }
  })

/** A model as a scoped resource. */
const acquireModel = (make: () => Transformer.Model | Promise<Transformer.Model>) => Effect.acquireRelease(Effect.promise(async () => make()), (m) => Effect.sync(() => m.dispose()))

/** Tensors as a scoped resource. */
const acquireTensors = <A extends Record<string, tf.Tensor>>(make: () => A) =>
  Effect.acquireRelease(Effect.sync(make), (ts) => Effect.sync(() => tf.dispose(Object.values(ts))))

/** Policy and reference for `mode`; the models are freed with the scope. */
const models = (c: Transformer.Config, mode: LlmPlan.Mode) =>
  Effect.gen(function*() {
    const init = () => Transformer.init(c, Rng.make(1, "llm-bench/init"))
    if (mode === "full") {
      const policy = yield* acquireModel(init)
      return { policy, reference: yield* acquireModel(() => Transformer.clone(policy)) }
    }
    // attach owns (and on dispose frees) the base; the reference is the same base weights without adapters.
    const lora = Schema.decodeUnknownSync(Lora.Config)(LlmPlan.LORA)
    const policy = yield* acquireModel(() => Lora.attach(init(), lora, Rng.make(1, "llm-bench/lora")))
    return { policy, reference: Lora.disabled(policy) }
  })

/** The training batch: ids `[B, T]`, completion mask `[B, T−1]`, advantages `[B]`, all seeded. */
const trainBatch = (c: Transformer.Config, l: LlmPlan.Lengths) => {
  const rng = Rng.make(1, "llm-bench/data")
  const B = l.trainBatch, T = l.trainPrompt + l.trainCompletion
  const ids = Int32Array.from({ length: B * T }, () => rng.nextInt(c.vocabSize))
  // Position t scores token t+1: the completion's tokens P…T−1 are scored at positions P−1…T−2.
  const mask = Float32Array.from({ length: B * (T - 1) }, (_, i) => (i % (T - 1) >= l.trainPrompt - 1 ? 1 : 0))
  return {
    ids: tf.tensor2d(ids, [B, T], "int32"),
    mask: tf.tensor2d(mask, [B, T - 1]),
    advantages: tf.tensor1d(Float32Array.from({ length: B }, () => rng.normal()))
  }
}

/** One GRPO step: the reference pass, then the policy's loss, backward and AdamW. */
const trainStep = (
  policy: Transformer.Model,
  reference: Transformer.Model,
  optimizer: Optimizer.AdamW,
  guard: Guard.Guard,
  batch: ReturnType<typeof trainBatch>,
  index: number
) =>
  Effect.gen(function*() {
    const ref = tf.tidy(() => LogProbs.tokenLogProbs(reference, batch.ids).logprobs) // [B, T−1]
    const config = Schema.decodeUnknownSync(Loss.Config)(LOSS)
    const loss = () => Loss.compute({
      logprobs: LogProbs.tokenLogProbs(policy, batch.ids).logprobs,
      oldLogprobs: ref,
      refLogprobs: ref,
      advantages: batch.advantages,
      mask: batch.mask
    }, config).loss
    const result = yield* Train.optimizerStep(optimizer, guard, index, [loss]).pipe(Effect.ensuring(Effect.sync(() => ref.dispose())))
    return result
  })

/** Measures one shape × mode in this process (the child's work); returns what it measured. */
const measure = (shape: LlmPlan.ShapeName, mode: LlmPlan.Mode, backend: "wasm" | "cpu", steps: number) =>
  Effect.scoped(Effect.gen(function*() {
    const info = yield* Backend.initEffect({ force: backend })
    const l = LlmPlan.LENGTHS, c = LlmPlan.config(shape, l)
    const { policy, reference } = yield* models(c, mode)
    const optimizer = yield* Optimizer.acquire(Transformer.trainableWeights(policy), Schema.decodeUnknownSync(Optimizer.Config)(OPTIMIZER))
    const guard = Guard.make(Schema.decodeUnknownSync(Guard.Config)({}))
    const batch = yield* acquireTensors(() => trainBatch(c, l))
    const step = (i: number) => trainStep(policy, reference, optimizer, guard, batch, i)
    // The warm-up step (weight packing, first allocations) is the one profiled for peak tensor bytes. tf.profile
    // takes the peak as Math.max(...) over every kernel it saw, which overflows the stack past ~100k kernels (a
    // whole generation): then the step has run but its peak is unknown.
    const warmPeak = yield* Effect.promise(() => tf.profile(async () => { await Effect.runPromise(step(0)) }).then((p) => p.peakBytes, () => undefined))
    const train: Array<{ wall: number; cpu: number }> = []
    for (let i = 1; i <= steps; i++) train.push(yield* timed(step(i)))
    const rng = Rng.make(1, "llm-bench/generate")
    const prompts = Array.from({ length: l.genBatch }, () => Int32Array.from({ length: l.genPrompt }, () => rng.nextInt(c.vocabSize)))
    const sample = (maxNewTokens: number) => Effect.promise(() => Generate.sample(policy, { prompts, groupSize: 1, maxNewTokens, temperature: 1, stopIds: [] }, rng))
    yield* sample(2)
    const generated = (r: Generate.Result) => r.completions.reduce((n, x) => n + x.length, 0)
    const gen: Array<{ wall: number; cpu: number; tokens: number }> = []
    for (let i = 0; i < steps; i++) {
      const t = yield* timed(sample(l.genNew))
      gen.push({ wall: t.wall, cpu: t.cpu, tokens: generated(t.value) })
    }
    const heap = (tf.backend() as unknown as { wasm?: { HEAPU8: Uint8Array } }).wasm?.HEAPU8.byteLength
    const rowTokens = l.trainBatch * (l.trainPrompt + l.trainCompletion)
    const tokens = gen[0].tokens
    const out: Measured = {
      train: { wall: rowTokens / median(train.map((t) => t.wall)), cpu: rowTokens / median(train.map((t) => t.cpu)) },
      generate: { wall: tokens / median(gen.map((t) => t.wall)), cpu: tokens / median(gen.map((t) => t.cpu)) },
      peakRss: peakRss(),
      ...(warmPeak === undefined ? {} : { peakTensorBytes: warmPeak }),
      ...(heap === undefined ? {} : { wasmHeapBytes: heap }),
      backend: info.reason
    }
    return out
  }))

/** The PyTorch twin of one configuration, or why it did not run. */
const runTorch = (p: LlmPlan.Plan, steps: number, threads: number): Measured | string => {
  const script = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../torch/llm_bench.py")
  const spec = JSON.stringify({ config: p.config, mode: p.mode, lora: LlmPlan.LORA, lengths: LlmPlan.LENGTHS, steps, threads, optimizer: OPTIMIZER, loss: LOSS, activationBytes: p.activationBytes })
  const python = ["python3", "/usr/bin/python3"].find((py) => spawnSync(py, ["-c", "import torch"], { stdio: "ignore" }).status === 0)
  if (python === undefined) return "no python3 with torch (install Debian's python3-torch)"
  const r = spawnSync(python, [script, spec], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, OMP_WAIT_POLICY: "PASSIVE" } })
  const line = r.stdout.split("\n").reverse().find((s) => s.startsWith(RESULT))
  if (r.status !== 0 || line === undefined) return `PyTorch run failed (exit ${r.status ?? r.signal})`
  const out = JSON.parse(line.slice(RESULT.length)) as (Omit<Measured, "backend"> & { torch: string; threads: number }) | { skipped: string }
  if ("skipped" in out) return out.skipped
  return { ...out, backend: `PyTorch ${out.torch}, ${out.threads} threads` }
}

/** Runs one configuration of ours in a child process. */
const runChild = (p: LlmPlan.Plan, backend: "wasm" | "cpu", steps: number): Measured | string => {
  const self = fileURLToPath(import.meta.url)
  const r = spawnSync(process.execPath, [self, "--child", p.shape, p.mode, backend, String(steps)], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 2 ** 26 })
  const line = r.stdout.split("\n").reverse().find((s) => s.startsWith(RESULT))
  if (r.status !== 0 || line === undefined) return `run failed (exit ${r.status ?? r.signal}; see its stderr above)`
  return JSON.parse(line.slice(RESULT.length)) as Measured
}

const argv = process.argv.slice(2)
const option = (name: string, fallback: string) => {
  const i = argv.indexOf(name)
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : fallback
}
const oneOf = <A extends string>(name: string, value: string, allowed: ReadonlyArray<A>): A => {
  if (!(allowed as ReadonlyArray<string>).includes(value)) throw new RangeError(`${name} must be one of ${allowed.join(", ")}, got "${value}"`)
  return value as A
}

const fmt = (x: number) => x.toFixed(x < 100 ? 1 : 0)
const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}x`

/** One row of the markdown table. */
const row = (p: LlmPlan.Plan, backend: string, ours: Measured | string, torch: Measured | string | undefined): string => {
  const cells = (m: Measured | string, k: "train" | "generate") => (typeof m === "string" ? "–" : `${fmt(m[k].wall)} (${fmt(m[k].cpu)})`)
  const rss = (m: Measured | string | undefined) => (m === undefined || typeof m === "string" ? "–" : LlmPlan.gib(m.peakRss))
  const tensors = (m: Measured | string) =>
    typeof m === "string" || m.peakTensorBytes === undefined ? "–" : `${LlmPlan.gib(m.peakTensorBytes)}${m.wasmHeapBytes === undefined ? "" : ` (wasm heap ${LlmPlan.gib(m.wasmHeapBytes)})`}`
  const both = typeof ours !== "string" && torch !== undefined && typeof torch !== "string"
  const notes = [typeof ours === "string" ? `ours: ${ours}` : "", torch !== undefined && typeof torch === "string" ? `PyTorch: ${torch}` : ""].filter((s) => s !== "").join("; ")
  return `| ${p.shape} | ${p.mode} | ${backend} | ${(p.parameters / 1e6).toFixed(1)}M / ${(p.trainable / 1e6).toFixed(2)}M | ${cells(ours, "train")} | ${torch === undefined ? "" : cells(torch, "train")} | ${both ? ratio(ours.train.wall, torch.train.wall) : ""} | ${cells(ours, "generate")} | ${torch === undefined ? "" : cells(torch, "generate")} | ${both ? ratio(ours.generate.wall, torch.generate.wall) : ""} | ${rss(ours)} (est. ${LlmPlan.gib(p.totalBytes)}) | ${rss(torch)} | ${tensors(ours)} | ${notes} |`
}

/** MemAvailable of /proc/meminfo, bytes (free memory where /proc is absent). */
const available = (): number => {
  const m = /MemAvailable:\s+(\d+) kB/.exec(readFileSync("/proc/meminfo", "utf8"))
  return m === null ? os.freemem() : Number(m[1]) * 1024
}

const main = async () => {
  if (argv[0] === "--child") {
    const [shape, mode, backend, steps] = argv.slice(1)
    const out = await Effect.runPromise(measure(LlmPlan.shapeName(shape), oneOf("mode", mode, ["full", "lora"]), oneOf("backend", backend, ["wasm", "cpu"]), Number(steps)))
    console.log(RESULT + JSON.stringify(out))
    return
  }
  const which = option("--shape", "smollm2-135m")
  const shapes = which === "all" ? (Object.keys(LlmPlan.SHAPES) as Array<LlmPlan.ShapeName>) : [LlmPlan.shapeName(which)]
  const modeArg = oneOf("--mode", option("--mode", "both"), ["full", "lora", "both"])
  const modes: Array<LlmPlan.Mode> = modeArg === "both" ? ["full", "lora"] : [modeArg]
  const backendArg = oneOf("--backend", option("--backend", "auto"), ["wasm", "cpu", "auto"])
  const steps = Number(option("--steps", "3"))
  if (!Number.isInteger(steps) || steps < 1) throw new RangeError(`--steps must be a positive integer, got ${option("--steps", "3")}`)
  const vsTorch = argv.includes("--vs-torch"), planOnly = argv.includes("--plan")
  const memory = os.totalmem(), threads = os.availableParallelism()
  const l = LlmPlan.LENGTHS
  console.log(`machine: ${threads} cores, ${LlmPlan.gib(memory)} memory (${LlmPlan.gib(available())} available now); shared machines make every figure noisy`)
  console.log(`train rows ${l.trainBatch} × (${l.trainPrompt} + ${l.trainCompletion}); generate ${l.genBatch} × (${l.genPrompt} + ${l.genNew} new); ${steps} timed step(s) after a warm-up`)
  const table: Array<string> = []
  for (const shape of shapes) {
    for (const mode of modes) {
      const p = LlmPlan.plan(shape, mode)
      const fit = LlmPlan.fit(p.totalBytes, memory)
      const backend = backendArg === "auto" ? Backend.choose(p.tensorBytes).name : backendArg
      const flops = `${(LlmPlan.trainFlops(p.config, mode) / 1e9).toFixed(2)} GFLOP/row token train, ${(LlmPlan.generateFlops(p.config) / 1e9).toFixed(2)} GFLOP/generated token`
      console.log(`\n${shape} ${mode}: ${(p.parameters / 1e6).toFixed(1)}M parameters, ${(p.trainable / 1e6).toFixed(2)}M trained; state ${LlmPlan.gib(p.stateBytes)} + activations ${LlmPlan.gib(p.activationBytes)} + init ${LlmPlan.gib(p.initBytes)}; backend ${backend}; ${fit.reason}; ${flops}`)
      const free = available()
      if (fit.fits && p.totalBytes > free) console.log(`  warning: only ${LlmPlan.gib(free)} is available now (other processes); the run may swap or be killed`)
      if (planOnly) continue
      const ours = fit.fits ? runChild(p, backend, steps) : fit.reason
      if (typeof ours !== "string") console.log(`  ours (${backend}${ours.wasmHeapBytes === undefined ? "" : `, wasm heap ${LlmPlan.gib(ours.wasmHeapBytes)}`}): train ${fmt(ours.train.wall)} tok/s, generate ${fmt(ours.generate.wall)} tok/s, peak RSS ${LlmPlan.gib(ours.peakRss)}`)
      // PyTorch builds its weights in place: no init transient, so its estimate is the tensors' bytes.
      const torchFit = LlmPlan.fit(p.tensorBytes, memory)
      const torch = vsTorch ? (torchFit.fits ? runTorch(p, steps, threads) : torchFit.reason) : undefined
      if (torch !== undefined && typeof torch !== "string") console.log(`  ${torch.backend}: train ${fmt(torch.train.wall)} tok/s, generate ${fmt(torch.generate.wall)} tok/s, peak RSS ${LlmPlan.gib(torch.peakRss)}`)
      table.push(row(p, backend, ours, torch))
    }
  }
  if (planOnly) return
  console.log(`\ntokens/s wall (per CPU-second); train counts all row tokens, generate the new tokens; ours / PyTorch from wall time\n`)
  console.log("| shape | mode | backend | params / trained | train ours | train PyTorch | ratio | generate ours | generate PyTorch | ratio | peak RSS ours | peak RSS PyTorch | peak tensors ours | notes |")
  console.log("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
  for (const r of table) console.log(r)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
