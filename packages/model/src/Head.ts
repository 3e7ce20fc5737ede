/**
 * The output head fused with log-softmax, the target's gather and the entropy, chunked over rows (N) and
 * vocabulary (V) so the logits `[N, V]` never exist whole, forward or backward.
 *
 * With hidden h `[N, C]`, head W (untied `[C, V]`: l = h·W; tied `[V, C]`: l = h·Wᵀ, read in place) and
 * temperature τ, z = l / τ. Per row, over vocab chunks c, an online log-sum-exp keeps
 *
 *   m = max_v z_v,   S = Σ_v e^{z_v − m},   A = Σ_v e^{z_v − m} z_v
 *
 * (rescaled by e^{m_old − m_new} when a chunk raises m), and the target's z_y. Then
 *
 *   logZ = m + log S,   logp = z_y − logZ,   H = −Σ p_v log p_v = −Σ p_v (z_v − logZ) = logZ − A / S.
 *
 * Backward, with g = ∂L/∂logp and k = ∂L/∂H per row, p_v = e^{z_v − logZ}:
 *
 *   ∂logp/∂z_v = [v = y] − p_v
 *   ∂H/∂z_v    = −p_v (log p_v + H)          (from ∂p_u/∂z_v = p_u([u = v] − p_v) and Σ p_u = 1)
 *   G_v = ∂L/∂l_v = (g ([v = y] − p_v) − k p_v (log p_v + H)) / τ
 *
 * recomputed chunk by chunk from the saved logZ and H: dh += G·W_cᵀ (tied: G·W_c) and dW_c = hᵀ·G
 * (tied: Gᵀ·h), vocab chunks outer and rows inner so each dW_c is complete while it is small. Live memory
 * is O(rows × vocabChunk) besides h, W and their gradients (dW twice while its chunks are concatenated).
 * Chunk sizes come from a byte budget (`chunkSizes`): a small `[N, V]` is one chunk.
 */
import * as tf from "@tensorflow/tfjs"

/** The head weight: untied `[C, V]` (l = h·W), or the tied embedding `[V, C]` (l = h·Wᵀ). */
export interface Weight {
  readonly weight: tf.Tensor2D
  readonly tied: boolean
}

/** Chunking of `logProbs`. */
export interface Options {
  /** τ > 0: log-probs of softmax(l / τ). Default 1. */
  readonly temperature?: number
  /** Rows per chunk. Default: from `budgetBytes`. */
  readonly rows?: number
  /** Vocabulary entries per chunk. Default: V, or 8192 when a full row chunk exceeds the budget. */
  readonly vocab?: number
  /** Bytes one `[rows, vocab]` float32 chunk may take. Default 16 MiB. */
  readonly budgetBytes?: number
}

/** Default byte budget of one logits chunk. */
export const defaultBudgetBytes = 16 * 2 ** 20

/** Rows and vocab entries per chunk: the whole `[N, V]` when it fits the budget, else V in 8192s. */
export const chunkSizes = (n: number, vocabSize: number, options: Options = {}): { rows: number; vocab: number } => {
  const budget = options.budgetBytes ?? defaultBudgetBytes
  const vocab = Math.min(vocabSize, options.vocab ?? (n * vocabSize * 4 <= budget ? vocabSize : 8192))
  const rows = Math.min(n, options.rows ?? Math.max(1, Math.floor(budget / (4 * vocab))))
  for (const [name, v] of [["rows", rows], ["vocab", vocab]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`Head.chunkSizes: ${name} must be a positive integer, got ${v}`)
  }
  return { rows, vocab }
}

/** Logits of h `[n, C]` against vocab entries v0…v0+len−1 of the head: `[n, len]`. */
const chunkLogits = (h: tf.Tensor2D, w: Weight, v0: number, len: number): tf.Tensor2D =>
  w.tied
    ? tf.matMul(h, tf.slice(w.weight, [v0, 0], [len, -1]) as tf.Tensor2D, false, true)
    : tf.matMul(h, tf.slice(w.weight, [0, v0], [-1, len]) as tf.Tensor2D)

/** [v = y] of targets `[n]` for vocab entries v0…v0+len−1: `[n, len]` (a target outside the chunk is all zeros). */
const chunkOneHot = (targets: tf.Tensor1D, v0: number, len: number): tf.Tensor2D => {
  const local = tf.sub(targets, tf.scalar(v0, "int32"))
  // tf.oneHot refuses depth 1, so that chunk compares; a broadcast comparison of a wide chunk is no option:
  // tfjs's cpu Equal is JavaScript and took 0.4 s per [508, 8192] chunk (63 % of a training step).
  // oneHot is made as int32 and cast, as the wasm kernel ignores a float dtype.
  return (len === 1 ? tf.cast(tf.equal(tf.expandDims(local, 1), tf.scalar(0, "int32")), "float32") : tf.cast(tf.oneHot(local, len), "float32")) as tf.Tensor2D
}

/** Forward of one row chunk: logZ, z_y and H, each `[n]`, by the online log-sum-exp over vocab chunks. */
const forwardRows = (h: tf.Tensor2D, targets: tf.Tensor1D, w: Weight, tau: number, V: number, vc: number): { logZ: tf.Tensor1D; zy: tf.Tensor1D; H: tf.Tensor1D } => {
  let m: tf.Tensor | undefined, S: tf.Tensor | undefined, A: tf.Tensor | undefined, zy: tf.Tensor | undefined
  for (let v0 = 0; v0 < V; v0 += vc) {
    const len = Math.min(vc, V - v0)
    const next = tf.tidy(() => {
      const z = tf.div(chunkLogits(h, w, v0, len), tau) // [n, len]
      const mc = tf.max(z, 1) // [n]
      const mNew = m === undefined ? mc : tf.maximum(m, mc)
      const e = tf.exp(tf.sub(z, tf.expandDims(mNew, 1))) // [n, len]
      const scale = m === undefined ? undefined : tf.exp(tf.sub(m, mNew)) // [n]: rescales the old sums to mNew
      const sc = tf.sum(e, 1), ac = tf.sum(tf.mul(e, z), 1)
      const y = tf.sum(tf.mul(z, chunkOneHot(targets, v0, len)), 1)
      return {
        m: mNew,
        S: scale === undefined ? sc : tf.add(tf.mul(S!, scale), sc),
        A: scale === undefined ? ac : tf.add(tf.mul(A!, scale), ac),
        zy: zy === undefined ? y : tf.add(zy, y)
      }
    })
    tf.dispose([m, S, A, zy].filter((t): t is tf.Tensor => t !== undefined))
    ;({ m, S, A, zy } = next)
  }
  return tf.tidy(() => {
    const logZ = tf.add(m!, tf.log(S!)) as tf.Tensor1D
    const out = { logZ, zy: tf.keep(zy!) as tf.Tensor1D, H: tf.sub(logZ, tf.div(A!, S!)) as tf.Tensor1D }
    tf.dispose([m!, S!, A!])
    return out
  })
}

/** Backward of one [rows, vocab] chunk: its share of dh `[n, C]` and of dW_c (untied `[C, len]`, tied `[len, C]`). */
const backwardChunk = (
  h: tf.Tensor2D, targets: tf.Tensor1D, w: Weight, tau: number, v0: number, len: number,
  logZ: tf.Tensor1D, H: tf.Tensor1D, g: tf.Tensor1D, k: tf.Tensor1D
): { dh: tf.Tensor2D; dW: tf.Tensor2D } =>
  tf.tidy(() => {
    const logp = tf.sub(tf.div(chunkLogits(h, w, v0, len), tau), tf.expandDims(logZ, 1)) // [n, len]: log p_v
    const p = tf.exp(logp)
    const dz = tf.sub(
      tf.mul(tf.expandDims(g, 1), tf.sub(chunkOneHot(targets, v0, len), p)),
      tf.mul(tf.expandDims(k, 1), tf.mul(p, tf.add(logp, tf.expandDims(H, 1))))
    )
    const G = tf.div(dz, tau) as tf.Tensor2D // [n, len]
    const wc = w.tied ? tf.slice(w.weight, [v0, 0], [len, -1]) as tf.Tensor2D : tf.slice(w.weight, [0, v0], [-1, len]) as tf.Tensor2D
    return {
      dh: (w.tied ? tf.matMul(G, wc) : tf.matMul(G, wc, false, true)) as tf.Tensor2D,
      dW: (w.tied ? tf.matMul(G, h, true, false) : tf.matMul(h, G, true, false)) as tf.Tensor2D
    }
  })

/** Adds `b` to the running sum `a` (if any), disposing both operands. */
const accumulate = (a: tf.Tensor2D | undefined, b: tf.Tensor2D): tf.Tensor2D => {
  if (a === undefined) return b
  const sum = tf.add(a, b) as tf.Tensor2D
  tf.dispose([a, b])
  return sum
}

/**
 * log p(targets) and the entropy H of softmax(l / τ), each `[N]`, of hidden `h` `[N, C]` under the head
 * `w`, for int32 `targets` `[N]`; chunked per `chunkSizes`. Differentiable in h and W (both outputs).
 * Call inside `tf.tidy` (the stacked `[2, N]` value it unstacks is left to the scope).
 */
export const logProbs = (h: tf.Tensor2D, targets: tf.Tensor1D, w: Weight, options: Options = {}): { logprobs: tf.Tensor1D; entropy: tf.Tensor1D } => {
  const [N, C] = h.shape
  const tau = options.temperature ?? 1
  if (!(tau > 0)) throw new RangeError(`Head.logProbs: temperature must be positive, got ${tau}`)
  const [wc, V] = w.tied ? [w.weight.shape[1], w.weight.shape[0]] : w.weight.shape
  if (wc !== C) throw new RangeError(`Head.logProbs: hidden has ${C} channels but the ${w.tied ? "tied" : "untied"} head weight is [${w.weight.shape}]`)
  if (targets.shape.length !== 1 || targets.shape[0] !== N || targets.dtype !== "int32") throw new RangeError(`Head.logProbs: targets must be int32 [${N}], got ${targets.dtype} [${targets.shape}]`)
  const { rows, vocab } = chunkSizes(N, V, options)
  const rowChunks = Array.from({ length: Math.ceil(N / rows) }, (_, i) => [i * rows, Math.min(rows, N - i * rows)] as const)
  const f = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [x, y, W, save] = args as [tf.Tensor2D, tf.Tensor1D, tf.Tensor2D, tf.GradSaveFunc]
    const head = { weight: W, tied: w.tied }
    const parts = rowChunks.map(([r0, n]) =>
      tf.tidy(() => forwardRows(tf.slice(x, [r0, 0], [n, -1]), tf.slice(y, [r0], [n]), head, tau, V, vocab)))
    const { logZ, H, value } = tf.tidy(() => {
      const logZ = tf.concat(parts.map((p) => p.logZ)), H = tf.concat(parts.map((p) => p.H))
      return { logZ, H, value: tf.stack([tf.sub(tf.concat(parts.map((p) => p.zy)), logZ), H]) } // [2, N]
    })
    tf.dispose(parts.flatMap((p) => [p.logZ, p.zy, p.H]))
    save([x, y, W, logZ, H])
    return {
      value,
      gradFunc: (dy: tf.Tensor | Array<tf.Tensor>, saved: Array<tf.Tensor>) => {
        const [sx, sy, sW, sLogZ, sH] = saved as [tf.Tensor2D, tf.Tensor1D, tf.Tensor2D, tf.Tensor1D, tf.Tensor1D]
        const sHead = { weight: sW, tied: w.tied }
        const d = dy as tf.Tensor2D // [2, N]: ∂L/∂logp, ∂L/∂H
        // Vocab chunks outer, rows inner: each dW_c is summed over row chunks while it is small, so dW
        // exists once (plus its concat), and dh `[N, C]` is summed over vocab chunks.
        const dh: Array<tf.Tensor2D | undefined> = rowChunks.map(() => undefined)
        const dW: Array<tf.Tensor2D> = []
        const slices = rowChunks.map(([r0, n]) => {
          const part = (t: tf.Tensor1D) => tf.slice(t, [r0], [n]) as tf.Tensor1D
          const row = (i: number) => tf.reshape(tf.slice(d, [i, r0], [1, n]), [n]) as tf.Tensor1D
          return { h: tf.slice(sx, [r0, 0], [n, -1]) as tf.Tensor2D, y: part(sy), logZ: part(sLogZ), H: part(sH), g: row(0), k: row(1) }
        })
        for (let v0 = 0; v0 < V; v0 += vocab) {
          const len = Math.min(vocab, V - v0)
          let acc: tf.Tensor2D | undefined
          slices.forEach((c, i) => {
            const r = backwardChunk(c.h, c.y, sHead, tau, v0, len, c.logZ, c.H, c.g, c.k)
            dh[i] = accumulate(dh[i], r.dh)
            acc = accumulate(acc, r.dW)
          })
          dW.push(acc!)
        }
        tf.dispose(slices.flatMap((c) => [c.h, c.y, c.logZ, c.H, c.g, c.k]))
        const out = tf.tidy(() => [tf.concat(dh as Array<tf.Tensor2D>, 0), tf.zerosLike(sy), tf.concat(dW, w.tied ? 0 : 1)])
        tf.dispose([...(dh as Array<tf.Tensor2D>), ...dW])
        return out
      }
    }
  })
  const both = f(h, targets, w.weight) // [2, N]
  const [logprobs, entropy] = tf.unstack(both) as [tf.Tensor1D, tf.Tensor1D]
  return { logprobs, entropy }
}
