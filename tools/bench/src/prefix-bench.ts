/**
 * Shared-prefix log-probs (`LogProbs.tokenLogProbs` with `sharedPrefix`) against the plain path, on the
 * R1-Zero demo policy: B rows of P template+question tokens that every row shares, then S completion
 * tokens of their own (some rows right-padded). Times training (log-probs → masked loss → gradients of
 * every weight) and a forward-only pass (the reference log-probs), rounds interleaved, and checks that
 * both paths agree. Then GRPO-shaped generation: 16 prompts (the P-token prefix's first 85 tokens as a
 * shared template, then a question) × 8 completions × 35 new tokens, no stop ids (`Generate.sample`: the
 * 8 completions of a prompt attend to one copy of its prefill).
 *
 *   npx tsc -b tools/bench/tsconfig.lib.json && node tools/bench/dist/prefix-bench.js [B] [P] [S] [rounds]
 *
 * Defaults: B 32, P 97, S 45, 5 rounds. Wall and CPU seconds are both printed (the wasm backend is
 * single-threaded; on a loaded machine tokens per CPU-second is the steadier figure).
 */
import * as tf from "@tensorflow/tfjs"
import { Backend } from "@r1flow/backend"
import { Rng } from "@r1flow/core"
import { Generate, LogProbs, Transformer } from "@r1flow/model"
import { median, time, timeAsync } from "./Timing.js"

const config: Transformer.Config = {
  vocabSize: 512, dModel: 128, nLayers: 3, nHeads: 4, nKvHeads: 2, dFf: 352, maxSeqLen: 160, ropeTheta: 10000, normEps: 1e-5, tieEmbeddings: true
}

const main = async () => {
  const [B, P, S, rounds] = [32, 97, 45, 5].map((d, i) => Number(process.argv[2 + i] ?? d))
  const T = P + S
  const info = await Backend.init()
  console.log(`backend: ${info.reason}; kernels: ${info.kernels?.join(", ") ?? "stock"}`)
  console.log(`demo policy ${JSON.stringify(config)}; B ${B}, shared prefix P ${P}, suffix S ${S} (T ${T})`)
  const model = Transformer.init(config, Rng.make(1, "bench/init"))
  const rng = Rng.make(2, "bench/data")
  const ids = new Int32Array(B * T)
  for (let t = 0; t < P; t++) ids[t] = rng.nextInt(config.vocabSize)
  for (let b = 0; b < B; b++) {
    const len = T - rng.nextInt(Math.floor(S / 3)) // ragged completions, right-padded with 0
    for (let t = 0; t < T; t++) ids[b * T + t] = t < P ? ids[t] : t < len ? rng.nextInt(config.vocabSize) : 0
  }
  const shared = LogProbs.commonPrefixLength(ids, B, T)
  const mask = tf.tensor2d(Float32Array.from({ length: B * (T - 1) }, (_, i) => (i % (T - 1) >= P - 1 ? 1 : 0)), [B, T - 1])
  const x = tf.tensor2d(ids, [B, T], "int32")
  const vars = model.weights.map((w) => w.variable)
  const train = (sharedPrefix: number) => () => {
    const { value, grads } = tf.variableGrads(() => tf.neg(tf.sum(tf.mul(LogProbs.tokenLogProbs(model, x, { sharedPrefix }).logprobs, mask))) as tf.Scalar, vars)
    value.dataSync()
    tf.dispose([value, ...Object.values(grads)])
  }
  const forward = (sharedPrefix: number) => () => tf.tidy(() => { LogProbs.tokenLogProbs(model, x, { sharedPrefix }).logprobs.dataSync() })

  const [a, b] = tf.tidy(() => [LogProbs.tokenLogProbs(model, x).logprobs.dataSync(), LogProbs.tokenLogProbs(model, x, { sharedPrefix: shared }).logprobs.dataSync()])
  let diff = 0
  for (let i = 0; i < a.length; i++) diff = Math.max(diff, Math.abs(a[i] - b[i]))
  console.log(`common prefix ${shared}; max |Δ logprob| shared vs plain: ${diff.toExponential(2)}`)

  const tokens = B * (T - 1)
  for (const [name, f] of [["train fwd+bwd", train], ["forward (log-probs)", forward]] as const) {
    const plain = f(0), sh = f(shared)
    plain(); sh() // warm-up
    const rp: Array<{ wall: number; cpu: number }> = [], rs: Array<{ wall: number; cpu: number }> = []
    for (let r = 0; r < rounds; r++) { rp.push(time(plain)); rs.push(time(sh)) }
    const line = (label: string, rs: Array<{ wall: number; cpu: number }>) => {
      const wall = median(rs.map((r) => r.wall)), cpu = median(rs.map((r) => r.cpu))
      console.log(`${name.padEnd(20)} ${label.padEnd(7)} ${(wall * 1000).toFixed(0).padStart(6)} ms wall ${(cpu * 1000).toFixed(0).padStart(6)} ms CPU   ${(tokens / wall).toFixed(0).padStart(6)} tokens/s wall ${(tokens / cpu).toFixed(0).padStart(6)} per CPU-s`)
      return cpu
    }
    const cp = line("plain", rp), cs = line("shared", rs)
    console.log(`${name.padEnd(20)} speedup ${(cp / cs).toFixed(2)}x (CPU time)`)
  }
  const template = ids.subarray(0, Math.min(85, P))
  const prompts = Array.from({ length: 16 }, (_, p) => Int32Array.from([...template, ...Array.from({ length: P - template.length - (p % 3) }, () => rng.nextInt(config.vocabSize))]))
  const generate = () => Generate.sample(model, { prompts, groupSize: 8, maxNewTokens: 35, temperature: 1, stopIds: [] }, rng)
  await generate()
  const rg: Array<{ wall: number; cpu: number }> = []
  for (let r = 0; r < rounds; r++) rg.push(await timeAsync(generate))
  const wall = median(rg.map((r) => r.wall)), cpu = median(rg.map((r) => r.cpu))
  console.log(`generate 16×8×35          ${(wall * 1000).toFixed(0).padStart(6)} ms wall ${(cpu * 1000).toFixed(0).padStart(6)} ms CPU   ${(16 * 8 * 35 / wall).toFixed(0).padStart(6)} tokens/s wall ${(16 * 8 * 35 / cpu).toFixed(0).padStart(6)} per CPU-s`)
  tf.dispose([x, mask])
  model.dispose()
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
