/**
 * Policy-model throughput on the selected tfjs backend: training (forward + backward + AdamW),
 * forward, and KV-cache generation, in tokens/s (median of rounds).
 *
 * Run (from the repository root; builds core, backend, model and this file with tsc, then runs it):
 *
 *   npx tsc -b tools/bench/tsconfig.lib.json && node tools/bench/dist/model-bench.js [reference|demo] [rounds]
 *
 * `R1FLOW_BACKEND=wasm|cpu|tensorflow|tensorflow-gpu` forces a backend. Both wall-clock and CPU-time rates are
 * printed: the wasm backend runs one thread, so on a machine shared with other jobs tokens per CPU-second is
 * the figure that does not depend on the load (on an idle machine the two agree).
 * Shapes — reference: 4 layers, 4 heads, width 256, SwiGLU width 688 (≈ GPT's 4·256 MLP in parameters),
 * context 256, vocab 512, batch 16, tied embeddings; demo: 4 layers, width 128, context 128, vocab 512.
 * Generation: batch 16 prompts of 32 tokens, 64 new tokens each, temperature 1, no stop ids.
 * For scale (same 2-core machine): PyTorch 1.13 ≈ 4,000–4,700 training and ≈ 2,600 generated tokens/s;
 * a direct tfjs-wasm port ≈ 60–660 training tokens/s.
 */
import * as tf from "@tensorflow/tfjs"
import { Backend } from "@r1flow/backend"
import { Rng } from "@r1flow/core"
import { Generate, Transformer } from "@r1flow/model"
import { median, timeAsync } from "./Timing.js"

const shapes = {
  reference: { config: { vocabSize: 512, dModel: 256, nLayers: 4, nHeads: 4, nKvHeads: 4, dFf: 688, maxSeqLen: 256, ropeTheta: 10000, normEps: 1e-5, tieEmbeddings: true }, batch: 16 },
  demo: { config: { vocabSize: 512, dModel: 128, nLayers: 4, nHeads: 4, nKvHeads: 4, dFf: 344, maxSeqLen: 128, ropeTheta: 10000, normEps: 1e-5, tieEmbeddings: true }, batch: 16 }
} satisfies Record<string, { config: Transformer.Config; batch: number }>



const main = async () => {
  const shapeName = (process.argv[2] ?? "reference") as keyof typeof shapes
  const rounds = Number(process.argv[3] ?? 3)
  const shape = shapes[shapeName]
  if (shape === undefined) throw new Error(`unknown shape ${shapeName}; use reference or demo`)
  const info = await Backend.init()
  const { config, batch } = shape
  const T = config.maxSeqLen
  const model = Transformer.init(config, Rng.make(1, "bench/init"))
  const rng = Rng.make(1, "bench/data")
  console.log(`backend: ${info.reason}${info.threads === undefined ? "" : `, ${info.threads} thread(s)`}`)
  console.log(`shape: ${shapeName} ${JSON.stringify(config)} batch ${batch}, ${(Transformer.parameterCount(model) / 1e6).toFixed(2)}M parameters`)

  const data = new Int32Array(batch * (T + 1)).map(() => rng.nextInt(config.vocabSize))
  const ids = tf.tensor2d(data, [batch, T + 1], "int32")
  const inputs = tf.slice(ids, [0, 0], [batch, T]) as tf.Tensor2D
  const targets = tf.cast(tf.oneHot(tf.slice(ids, [0, 1], [batch, T]) as tf.Tensor2D, config.vocabSize), "float32")
  const vars = model.weights.map((w) => w.variable)
  const lr = 1e-3, wd = 0.1
  const adam = tf.train.adam(lr, 0.9, 0.95, 1e-8)
  const trainStep = () =>
    tf.tidy(() => {
      const loss = adam.minimize(() => tf.neg(tf.mean(tf.sum(tf.mul(tf.logSoftmax(Transformer.forward(model, inputs)), targets), -1))) as tf.Scalar, true, vars)
      // Decoupled weight decay (AdamW) on matrices.
      for (const v of vars) if (v.rank === 2) v.assign(tf.mul(v, 1 - lr * wd))
      loss!.dataSync()
    })
  const forwardStep = () => tf.tidy(() => { tf.sum(Transformer.forward(model, inputs)).dataSync() })
  const prompts = Array.from({ length: batch }, () => Int32Array.from({ length: 32 }, () => rng.nextInt(config.vocabSize)))
  const generate = () => Generate.sample(model, { prompts, groupSize: 1, maxNewTokens: 64, temperature: 1, stopIds: [] }, rng)

  const report = async (name: string, tokens: number, f: () => unknown) => {
    await f() // warm-up (kernel setup, XNNPACK operator creation, optimizer slots)
    const runs: Array<{ wall: number; cpu: number }> = []
    for (let r = 0; r < rounds; r++) runs.push(await timeAsync(async () => f()))
    const wall = median(runs.map((r) => r.wall)), cpu = median(runs.map((r) => r.cpu))
    console.log(
      `${name.padEnd(22)} ${(tokens / wall).toFixed(0).padStart(6)} tokens/s wall, ${(tokens / cpu).toFixed(0).padStart(6)} per CPU-second` +
        `   (median of ${rounds}: ${(wall * 1000).toFixed(0)} ms wall, ${(cpu * 1000).toFixed(0)} ms CPU per ${tokens} tokens)`
    )
  }
  await report("train fwd+bwd+AdamW", batch * T, trainStep)
  await report("forward", batch * T, forwardStep)
  await report("generate (KV cache)", batch * 64, generate)
  console.log(`tensors alive: ${tf.memory().numTensors}`)
  adam.dispose()
  tf.dispose([ids, inputs, targets])
  model.dispose()
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
