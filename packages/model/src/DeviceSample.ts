/**
 * The sampling draw on the device, for backends where reading a step's `[rows, V]` logits back costs more than
 * the draw (a GPU: 64 rows × 150k vocabulary is 38 MB a token); only a token and its log-prob per row come back.
 * The same draw as `Generate.sampleToken` without top-k / top-p, per row l `[V]` and the host's u ∈ [0, 1):
 *
 *   m = max_v l_v,   w_v = e^{(l_v − m)/τ},   W = Σ_v w_v
 *   token = #{i : Σ_{v ≤ i} w_v ≤ u·W}          (the first index whose running sum exceeds u·W; clamped to V − 1)
 *   logprob = (l_token − m)/τ − log W           (greedy, τ = 0: token = argmax, logprob = l_token − logsumexp(l))
 *
 * The host draws u for each unfinished row in row order, exactly as the host path does, so the RNG stream is the
 * same. Sums here are float32 (the host's are float64): a draw can differ from the host's only when u·W falls
 * within float32 rounding (~1e-7 relative) of a running sum's boundary.
 */
import * as tf from "@tensorflow/tfjs"
import { Read } from "@r1flow/backend"

/** Whether `sample` draws on the device: webgpu, and neither top-k nor top-p (those sort; they stay on the host). */
export const serves = (options: { readonly topK?: number; readonly topP?: number }, vocabSize: number): boolean =>
  tf.getBackend() === "webgpu" && !(options.topK !== undefined && options.topK > 0 && options.topK < vocabSize) && !(options.topP !== undefined && options.topP < 1)

/** Token ids and log-probs `[B]` of `logits` `[B, V]` for draws `u` `[B]` at temperature τ (0: greedy). Disposes nothing it is given. */
export const draw = async (logits: tf.Tensor2D, u: Float64Array, temperature: number): Promise<{ tokens: Int32Array; logprobs: Float32Array }> => {
  const [B, V] = logits.shape
  // x[b, token_b] of x [B, V], as a gather from the flat x at b·V + token_b.
  const at = (x: tf.Tensor2D, token: tf.Tensor1D) => tf.gather(tf.reshape(x, [B * V]), tf.add(token, tf.range(0, B * V, V, "int32"))) // [B]
  const out = tf.tidy(() => {
    const m = tf.max(logits, 1, true) // [B, 1]
    if (temperature === 0) {
      const token = tf.argMax(logits, 1) as tf.Tensor1D // [B]
      const lse = tf.add(m, tf.log(tf.sum(tf.exp(tf.sub(logits, m)), 1, true))) // [B, 1]
      return tf.stack([tf.cast(token, "float32"), tf.sub(at(logits, token), tf.reshape(lse, [B]))]) // [2, B]
    }
    const z = tf.mul(tf.sub(logits, m), 1 / temperature) as tf.Tensor2D // [B, V]
    const running = tf.cumsum(tf.exp(z), 1) // [B, V]
    const total = tf.slice(running, [0, V - 1], [B, 1]) // [B, 1]
    const target = tf.mul(tf.tensor2d(Float32Array.from(u), [B, 1]), total)
    const token = tf.minimum(tf.sum(tf.cast(tf.lessEqual(running, target), "int32"), 1), tf.scalar(V - 1, "int32")) as tf.Tensor1D // [B]
    return tf.stack([tf.cast(token, "float32"), tf.sub(at(z, token), tf.reshape(tf.log(total), [B]))])
  })
  const host = await Read.floats(out) // [2, B]
  return { tokens: Int32Array.from(host.subarray(0, B)), logprobs: host.slice(B) }
}
