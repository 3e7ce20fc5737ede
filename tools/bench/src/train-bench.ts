/**
 * CPU speed of the policy model, with and without the native kernels (@r1flow/kernels), and optionally
 * side by side with PyTorch: training (forward + backward + AdamW, the work of one GRPO/SFT update),
 * forward (logits of a batch) and KV-cache generation, in tokens/s, with achieved model GFLOP/s and the
 * fraction of the machine's measured matmul peak.
 *
 * Run (from the repository root):
 *
 *   npx tsc -b tools/bench/tsconfig.lib.json && node tools/bench/dist/train-bench.js [--shape reference|demo|all] [--rounds N] [--vs-torch] [--native-only] [--profile]
 *
 * Shapes — reference (issue 10): 4 layers, 4 heads, width 256, SwiGLU 688, context 256, vocab 512, batch 16;
 * demo (the r1-zero demo's policy): 3 layers, 4 heads / 2 kv heads, width 128, SwiGLU 352, sequence 145,
 * vocab 512, batch 32. Generation: one prompt of 32 tokens per batch row, 64 new tokens, temperature 1.
 * Model FLOPs per token, as nanoGPT / PaLM count them: forward 2·N + 4·L·C·S (N the matmul parameters
 * including the tied output head, S the attended length: T for a sequence, the mean cache length when
 * generating), training 3× forward. Peak: a 1024³ product on the native GEMM, all threads, best of 7.
 * `--vs-torch` runs tools/bench/torch/train_bench.py (Debian's python3-torch, OMP_WAIT_POLICY=PASSIVE) on the
 * same shapes and prints ours / PyTorch. Wall-clock and CPU-time rates are both printed: on a machine shared
 * with other jobs the CPU-time figure is the steadier one. `--profile` prints the time per kernel of one
 * step of each kind with the native kernels.
 */
import * as tf from "@tensorflow/tfjs"
import { spawnSync } from "node:child_process"
import path from "node:path"
import { Effect, Schema } from "effect"
import { fileURLToPath } from "node:url"
import { Backend, Read } from "@r1flow/backend"
import { Rng } from "@r1flow/core"
import { Guard, Optimizer, Train } from "@r1flow/grpo"
import { Kernels } from "@r1flow/kernels"
import { Generate, Transformer } from "@r1flow/model"
import { median, timeAsync } from "./Timing.js"

interface Shape {
  readonly config: Transformer.Config
  readonly batch: number
  /** Tokens per training / forward row. */
  readonly seq: number
}

const base = { ropeTheta: 10000, normEps: 1e-5, tieEmbeddings: true }
const shapes: Record<string, Shape> = {
  reference: { config: { vocabSize: 512, dModel: 256, nLayers: 4, nHeads: 4, nKvHeads: 4, dFf: 688, maxSeqLen: 256, ...base }, batch: 16, seq: 256 },
  demo: { config: { vocabSize: 512, dModel: 128, nLayers: 3, nHeads: 4, nKvHeads: 2, dFf: 352, maxSeqLen: 145, ...base }, batch: 32, seq: 145 }
}
const PROMPT = 32, NEW = 64

const argv = process.argv.slice(2)
const flag = (name: string) => argv.includes(name)
const option = (name: string, fallback: string) => {
  const i = argv.indexOf(name)
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : fallback
}


interface Rate { readonly wall: number; readonly cpu: number }

/** Tokens per wall second and per CPU second, medians of `rounds` after one warm-up. */
const measure = async (tokens: number, rounds: number, f: () => Promise<unknown>): Promise<Rate> => {
  await f()
  const wall: Array<number> = [], cpu: Array<number> = []
  for (let i = 0; i < rounds; i++) {
    const t = await timeAsync(f)
    wall.push(t.wall)
    cpu.push(t.cpu)
  }
  return { wall: tokens / median(wall), cpu: tokens / median(cpu) }
}

/** Model FLOPs per token of a forward pass attending over `s` positions. */
const forwardFlops = (c: Transformer.Config, s: number): number => {
  const kv = (c.dModel / c.nHeads) * c.nKvHeads
  const perLayer = c.dModel * c.dModel * 2 + c.dModel * kv * 2 + 3 * c.dModel * c.dFf
  return 2 * (c.nLayers * perLayer + c.vocabSize * c.dModel) + 4 * c.nLayers * c.dModel * s
}

/** GFLOP/s of a 1024³ product, best of 7 (the matmul peak the kernels reach on this machine; best, not median, so that other load on a shared machine does not lower the peak). */
const matmulPeak = (): number => {
  const a = tf.randomNormal([1024, 1024]), b = tf.randomNormal([1024, 1024])
  tf.tidy(() => { tf.matMul(a, b).dataSync() })
  let best = Infinity
  for (let i = 0; i < 7; i++) {
    const t0 = performance.now()
    tf.tidy(() => { tf.matMul(a, b).dataSync() })
    best = Math.min(best, (performance.now() - t0) / 1000)
  }
  tf.dispose([a, b])
  return (2 * 1024 ** 3) / best / 1e9
}

interface Result { readonly train: Rate; readonly forward: Rate; readonly generate: Rate }

/**
 * Wraps every registered wasm kernel with a timer for the duration of `f` and prints where the time went
 * (kernel, calls, total ms, share), then puts the kernels back.
 */
const profile = async (label: string, f: () => Promise<unknown>): Promise<void> => {
  const kernels = tf.getKernelsForBackend("wasm")
  const stats = new Map<string, { calls: number; ms: number }>()
  let depth = 0
  for (const k of kernels) {
    tf.unregisterKernel(k.kernelName, "wasm")
    tf.registerKernel({
      ...k,
      kernelFunc: (args) => {
        // Kernels that call other kernels count once, at the outermost level.
        const t0 = performance.now()
        depth++
        try {
          return k.kernelFunc(args)
        } finally {
          depth--
          if (depth === 0) {
            const ms = performance.now() - t0
            const add = (key: string) => {
              const s = stats.get(key) ?? { calls: 0, ms: 0 }
              s.calls++
              s.ms += ms
              stats.set(key, s)
            }
            add(k.kernelName)
            if (k.kernelName === "BatchMatMul") {
              // Products by shape too (indented under the total).
              const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo }
              const { transposeA, transposeB } = args.attrs as { transposeA: boolean; transposeB: boolean }
              add(`  [${a.shape}]${transposeA ? "ᵀ" : ""}·[${b.shape}]${transposeB ? "ᵀ" : ""}`)
            }
          }
        }
      }
    })
  }
  const t0 = performance.now()
  try {
    await f()
  } finally {
    for (const k of kernels) {
      tf.unregisterKernel(k.kernelName, "wasm")
      tf.registerKernel(k)
    }
  }
  const total = performance.now() - t0
  const inKernels = [...stats].filter(([k]) => !k.startsWith(" ")).reduce((a, [, s]) => a + s.ms, 0)
  console.log(`  profile of ${label}: ${total.toFixed(0)} ms, ${inKernels.toFixed(0)} ms in kernels (${((100 * inKernels) / total).toFixed(0)}%), ${[...stats].filter(([k]) => !k.startsWith(" ")).reduce((a, [, s]) => a + s.calls, 0)} kernel calls`)
  for (const [name, s] of [...stats].sort((a, b) => b[1].ms - a[1].ms).slice(0, 30)) {
    console.log(`    ${name.padEnd(22)} ${String(s.calls).padStart(6)} calls ${s.ms.toFixed(1).padStart(9)} ms ${((100 * s.ms) / total).toFixed(1).padStart(5)}%`)
  }
}

const runShape = async (shape: Shape, rounds: number, profiled = false): Promise<Result> => {
  const { config, batch, seq } = shape
  const model = Transformer.init(config, Rng.make(1, "bench/init"))
  const rng = Rng.make(1, "bench/data")
  const data = new Int32Array(batch * (seq + 1)).map(() => rng.nextInt(config.vocabSize))
  const ids = tf.tensor2d(data, [batch, seq + 1], "int32")
  const inputs = tf.slice(ids, [0, 0], [batch, seq]) as tf.Tensor2D
  const targets = tf.tidy(() => tf.cast(tf.oneHot(tf.slice(ids, [0, 1], [batch, seq]) as tf.Tensor2D, config.vocabSize), "float32"))
  // The update GRPO and SFT run (Train.optimizerStep: gradients, global norm, guard, AdamW), with
  // PyTorch's settings: lr 1e-3, betas 0.9/0.95, weight decay 0.1, no clipping.
  const optimizer = Optimizer.make(model.weights, Schema.decodeUnknownSync(Optimizer.Config)({ learningRate: 1e-3, beta1: 0.9, beta2: 0.95, weightDecay: 0.1, maxGradNorm: 0 }))
  const guard = Guard.make(Schema.decodeUnknownSync(Guard.Config)({}))
  let step = 0
  const loss = () => tf.neg(tf.mean(tf.sum(tf.mul(tf.logSoftmax(Transformer.forward(model, inputs)), targets), -1))) as tf.Scalar
  const train = () => Effect.runPromise(Train.optimizerStep(optimizer, guard, step++, [loss]))
  const forward = async () => { await Read.floats(tf.tidy(() => tf.sum(Transformer.forward(model, inputs)))) }
  const prompts = Array.from({ length: batch }, () => Int32Array.from({ length: PROMPT }, () => rng.nextInt(config.vocabSize)))
  const generate = () => Generate.sample(model, { prompts, groupSize: 1, maxNewTokens: NEW, temperature: 1, stopIds: [] }, rng)
  if (profiled) {
    await train()
    await profile("one training step", train)
    await profile("one forward pass", forward)
    await generate()
    await profile("one generation", generate)
  }
  const result = {
    train: await measure(batch * seq, rounds, train),
    forward: await measure(batch * seq, rounds, forward),
    generate: await measure(batch * NEW, rounds, generate)
  }
  optimizer.dispose()
  tf.dispose([ids, inputs, targets])
  model.dispose()
  return result
}

/** Runs the PyTorch twin; a message instead when python3-torch is not installed. */
const runTorch = (shape: Shape, rounds: number): Result | string => {
  const script = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../torch/train_bench.py")
  const spec = JSON.stringify({ config: { ...shape.config, maxSeqLen: Math.max(shape.seq, PROMPT + NEW) }, batch: shape.batch, promptLen: PROMPT, newTokens: NEW, rounds, threads: 2 })
  for (const python of ["python3", "/usr/bin/python3"]) {
    if (spawnSync(python, ["-c", "import torch"], { stdio: "ignore" }).status !== 0) continue
    const r = spawnSync(python, [script, spec], { encoding: "utf8", env: { ...process.env, OMP_WAIT_POLICY: "PASSIVE" } })
    if (r.status !== 0) return `PyTorch run failed: ${r.stderr.trim().split("\n").slice(-3).join(" | ")}`
    const out = JSON.parse(r.stdout.trim().split("\n").pop()!) as Result & { torch: string; threads: number }
    console.log(`  PyTorch ${out.torch} (${python}), ${out.threads} threads, OMP_WAIT_POLICY=PASSIVE`)
    return out
  }
  return "no python3 with torch (install Debian's python3-torch)"
}

const fmt = (x: number) => x.toFixed(0).padStart(7)

const main = async () => {
  const rounds = Number(option("--rounds", "3"))
  const which = option("--shape", "all")
  const names = which === "all" ? Object.keys(shapes) : [which]
  for (const n of names) if (shapes[n] === undefined) throw new Error(`unknown shape ${n}; use reference, demo or all`)
  const info = await Backend.init({ force: "wasm" })
  const native = Kernels.install()
  console.log(`backend: ${info.reason}, ${info.threads ?? 1} wasm thread(s); r1flow wasm kernels: ${(info.kernels ?? []).join(", ") || "none"}`)
  console.log(`native kernels: ${native.kernels.length > 0 ? native.kernels.join(", ") : "none"} — ${native.reason}`)
  const modes: Array<{ name: string; native: boolean }> = []
  if (!flag("--native-only")) modes.push({ name: "wasm", native: false })
  if (native.kernels.length > 0) modes.push({ name: "wasm+native", native: true })
  Kernels.uninstall()
  const peakWasm = modes.some((m) => !m.native) ? matmulPeak() : undefined
  Kernels.install()
  const peak = native.kernels.length > 0 ? matmulPeak() : peakWasm!
  console.log(`matmul peak (1024³): ${native.kernels.length > 0 ? `native ${peak.toFixed(1)} GFLOP/s` : ""}${peakWasm === undefined ? "" : `${native.kernels.length > 0 ? ", " : ""}wasm ${peakWasm.toFixed(1)} GFLOP/s`}`)
  for (const name of names) {
    const shape = shapes[name]
    const c = shape.config
    const model = Transformer.init(c, Rng.make(1, "bench/count"))
    console.log(`\n${name}: ${c.nLayers} layers, ${c.nHeads}/${c.nKvHeads} heads, width ${c.dModel}, SwiGLU ${c.dFf}, vocab ${c.vocabSize}, seq ${shape.seq}, batch ${shape.batch}, ${(Transformer.parameterCount(model) / 1e6).toFixed(2)}M parameters`)
    model.dispose()
    const flops = { train: 3 * forwardFlops(c, shape.seq), forward: forwardFlops(c, shape.seq), generate: forwardFlops(c, PROMPT + NEW / 2) }
    console.log(`  model MFLOP/token: train ${(flops.train / 1e6).toFixed(2)}, forward ${(flops.forward / 1e6).toFixed(2)}, generate ${(flops.generate / 1e6).toFixed(2)}`)
    console.log(`  ${"".padEnd(12)} ${"train tok/s".padStart(22)} ${"forward tok/s".padStart(22)} ${"generate tok/s".padStart(22)}   (wall / per CPU-second; GFLOP/s from wall)`)
    const results = new Map<string, Result>()
    for (const mode of modes) {
      if (mode.native) Kernels.install()
      else Kernels.uninstall()
      const r = await runShape(shape, rounds, flag("--profile") && mode.native)
      results.set(mode.name, r)
      const cell = (k: keyof Result) => `${fmt(r[k].wall)} /${fmt(r[k].cpu)} ${((r[k].wall * flops[k]) / 1e9).toFixed(1).padStart(5)}G`
      console.log(`  ${mode.name.padEnd(12)} ${cell("train")} ${cell("forward")} ${cell("generate")}`)
    }
    const best = results.get("wasm+native") ?? results.get("wasm")!
    console.log(`  train reaches ${((100 * best.train.wall * flops.train) / 1e9 / peak).toFixed(1)}% of the ${peak.toFixed(0)} GFLOP/s matmul peak`)
    const wasm = results.get("wasm"), fast = results.get("wasm+native")
    if (wasm !== undefined && fast !== undefined) {
      console.log(`  native / wasm: train ${(fast.train.wall / wasm.train.wall).toFixed(2)}x, forward ${(fast.forward.wall / wasm.forward.wall).toFixed(2)}x, generate ${(fast.generate.wall / wasm.generate.wall).toFixed(2)}x`)
    }
    if (flag("--vs-torch")) {
      const t = runTorch(shape, rounds)
      if (typeof t === "string") console.log(`  PyTorch: ${t}`)
      else {
        const cell = (k: keyof Result) => `${fmt(t[k].wall)} /${fmt(t[k].cpu)} ${((t[k].wall * flops[k]) / 1e9).toFixed(1).padStart(5)}G`
        console.log(`  ${"pytorch".padEnd(12)} ${cell("train")} ${cell("forward")} ${cell("generate")}`)
        const ratio = (k: keyof Result) => `${k} ${(best[k].wall / t[k].wall).toFixed(2)}x (CPU-time ${(best[k].cpu / t[k].cpu).toFixed(2)}x)`
        console.log(`  ours / PyTorch: ${ratio("train")}, ${ratio("forward")}, ${ratio("generate")}`)
      }
    }
  }
  console.log(`\ntensors alive at the end: ${tf.memory().numTensors}`)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
