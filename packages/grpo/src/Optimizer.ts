/**
 * AdamW (Loshchilov & Hutter, decoupled weight decay), the learning-rate schedule and global-norm
 * gradient clipping, shared by the GRPO and SFT trainers.
 *
 *   m ← β1 m + (1 − β1) g          v ← β2 v + (1 − β2) g²
 *   θ ← θ − lr · ( m / (1 − β1^t) / (√(v / (1 − β2^t)) + ε)  +  λ θ )
 *
 * as PyTorch's `AdamW` (decay scaled by lr, applied to the pre-update θ). Decay is applied only to
 * weights of rank ≥ 2 (matrices and embeddings), not to norms' gains or biases, as nanoGPT does.
 * The state (m, v and the step) exports to plain `Float32Array`s and imports back bit-exactly, for checkpoints.
 */
import * as tf from "@tensorflow/tfjs"
import { AdamW as FusedAdamW } from "@r1flow/kernels"
import { Effect, Schema } from "effect"

const positive = Schema.Finite.check(Schema.isGreaterThan(0))
const nonNegative = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0))
const unit = Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0), Schema.isLessThan(1))

/** Learning-rate schedule after warm-up. */
export const ScheduleKind = Schema.Literals(["constant", "cosine"])

/** Optimizer configuration. `totalSteps` is required by the cosine schedule. */
export const Config = Schema.Struct({
  learningRate: positive.pipe(Schema.withDecodingDefaultKey(Effect.succeed(1e-6))),
  beta1: unit.pipe(Schema.withDecodingDefaultKey(Effect.succeed(0.9))),
  beta2: unit.pipe(Schema.withDecodingDefaultKey(Effect.succeed(0.999))),
  epsilon: positive.pipe(Schema.withDecodingDefaultKey(Effect.succeed(1e-8))),
  weightDecay: nonNegative.pipe(Schema.withDecodingDefaultKey(Effect.succeed(0.01))),
  /** Global gradient-norm clip; 0 turns clipping off. */
  maxGradNorm: nonNegative.pipe(Schema.withDecodingDefaultKey(Effect.succeed(1.0))),
  warmupSteps: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(0))),
  schedule: ScheduleKind.pipe(Schema.withDecodingDefaultKey(Effect.succeed("constant" as const))),
  totalSteps: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThan(0))),
  /** Cosine decays to learningRate × minLrRatio. */
  minLrRatio: unit.pipe(Schema.withDecodingDefaultKey(Effect.succeed(0)))
})
/** Optimizer configuration. */
export type Config = typeof Config.Type

/** A trainable weight, as the model exposes it. */
export interface Weight {
  readonly name: string
  readonly variable: tf.Variable
}

/**
 * The learning rate of update `step` (0-based): linear warm-up `lr · (step + 1) / (warmup + 1)` (nanoGPT;
 * never 0, unlike HF's `step / warmup`), then constant, or cosine from lr down to `lr · minLrRatio` at `totalSteps`.
 */
export const learningRate = (config: Config, step: number): number => {
  const lr = config.learningRate
  if (step < config.warmupSteps) return (lr * (step + 1)) / (config.warmupSteps + 1)
  if (config.schedule === "constant") return lr
  const total = config.totalSteps
  if (total === undefined) throw new Error("schedule \"cosine\" needs totalSteps")
  const progress = Math.min(1, (step - config.warmupSteps) / Math.max(1, total - config.warmupSteps))
  const min = lr * config.minLrRatio
  return min + 0.5 * (1 + Math.cos(Math.PI * progress)) * (lr - min)
}

/**
 * Inputs per `addN`: WebGPU binds each input as a storage buffer, and a device guarantees only 8 per shader
 * (7 inputs and the output); tfjs's WebGPU AddN does not split (its Concat does).
 */
const addNInputs = 7

/**
 * Σ xs as a left fold of `addN`s of at most `addNInputs` inputs: ((x₁ + … + x₇) + x₈ + …). The cpu and wasm AddN
 * kernels add their inputs in order, so this is bitwise one `addN` there.
 */
const sumInOrder = (xs: ReadonlyArray<tf.Tensor>): tf.Tensor => {
  let acc = tf.addN(xs.slice(0, addNInputs))
  for (let i = addNInputs; i < xs.length; i += addNInputs - 1) acc = tf.addN([acc, ...xs.slice(i, i + addNInputs - 1)])
  return acc
}

/** √(Σ ‖g‖²) over all gradients, as a scalar tensor (caller disposes). */
export const globalNorm = (grads: ReadonlyArray<tf.Tensor>): tf.Scalar =>
  tf.tidy(() => tf.sqrt(sumInOrder(grads.map((g) => tf.sum(tf.square(g))))) as tf.Scalar)

/** The factor that scales gradients of global norm `norm` down to `maxNorm` (1 when within, or clipping is off). */
export const clipScale = (norm: number, maxNorm: number): number => (maxNorm > 0 && norm > maxNorm ? maxNorm / (norm + 1e-6) : 1)

/** Optimizer state for a checkpoint: the update count and m, v per weight (in weight order). */
export interface State {
  readonly step: number
  readonly names: ReadonlyArray<string>
  readonly m: ReadonlyArray<Float32Array>
  readonly v: ReadonlyArray<Float32Array>
}

/** An optimizer state that does not fit the weights it is loaded into. */
export class StateError extends Schema.TaggedError<StateError>()("OptimizerStateError", {
  message: Schema.String
}) {}

/** AdamW over a fixed list of weights. */
export interface AdamW {
  readonly config: Config
  readonly weights: ReadonlyArray<Weight>
  /** Updates applied so far. */
  readonly step: () => number
  /** The learning rate the next update will use. */
  readonly currentLearningRate: () => number
  /** One update with `grads` (aligned with `weights`), each first multiplied by `scale` (the clip factor). */
  readonly apply: (grads: ReadonlyArray<tf.Tensor>, scale?: number) => void
  /** The moments (read back asynchronously) and step, for a checkpoint. */
  readonly exportState: () => Effect.Effect<State>
  readonly importState: (state: State) => Effect.Effect<void, StateError>
  readonly dispose: () => void
}

/** Puts `state` into the moments `m`, `v` of `weights` after checking it fits them; returns its step. */
const restore = (weights: ReadonlyArray<Weight>, m: ReadonlyArray<tf.Variable>, v: ReadonlyArray<tf.Variable>, state: State): Effect.Effect<number, StateError> =>
  Effect.gen(function*() {
    if (!Number.isInteger(state.step) || state.step < 0) return yield* new StateError({ message: `step must be a non-negative integer, got ${state.step}` })
    if (state.names.length !== weights.length || state.m.length !== weights.length || state.v.length !== weights.length) {
      return yield* new StateError({ message: `state has ${state.names.length} weights (${state.m.length} m, ${state.v.length} v), the model has ${weights.length}` })
    }
    for (const [i, w] of weights.entries()) {
      if (state.names[i] !== w.name) return yield* new StateError({ message: `weight ${i} is "${state.names[i]}" in the state, "${w.name}" in the model` })
      if (state.m[i].length !== w.variable.size || state.v[i].length !== w.variable.size) {
        return yield* new StateError({ message: `weight "${w.name}" has ${w.variable.size} values, the state has m ${state.m[i].length}, v ${state.v[i].length}` })
      }
    }
    tf.tidy(() => {
      weights.forEach((w, i) => {
        m[i].assign(tf.tensor(state.m[i], w.variable.shape))
        v[i].assign(tf.tensor(state.v[i], w.variable.shape))
      })
    })
    return state.step
  })

/** Copies of the moments' values, read with `data()` (a GPU tensor has no synchronous read). */
const readAll = (xs: ReadonlyArray<tf.Variable>): Promise<Array<Float32Array>> =>
  Promise.all(xs.map(async (x) => Float32Array.from((await x.data()) as Float32Array)))

/** Builds AdamW for `weights` (zero moments, step 0). */
export const make = (weights: ReadonlyArray<Weight>, config: Config): AdamW => {
  // Unnamed: tfjs variable names are global, and two optimizers may cover the same model.
  const zeros = () => tf.tidy(() => weights.map((w) => tf.variable(tf.zerosLike(w.variable), false)))
  const m = zeros()
  const v = zeros()
  let t = 0
  const apply = (grads: ReadonlyArray<tf.Tensor>, scale = 1) => {
    if (grads.length !== weights.length) throw new Error(`AdamW got ${grads.length} gradients for ${weights.length} weights`)
    const lr = learningRate(config, t)
    t++
    const { beta1: b1, beta2: b2 } = config
    const c1 = 1 - b1 ** t
    const c2 = 1 - b2 ** t
    tf.tidy(() => {
      weights.forEach((w, i) => {
        const decay = config.weightDecay > 0 && w.variable.rank >= 2 ? 1 - lr * config.weightDecay : 1
        // One native kernel per weight where @r1flow/kernels is installed, bitwise equal to the composite.
        const [p1, m1, v1] = FusedAdamW.update(w.variable, m[i], v[i], grads[i], {
          beta1: b1, beta2: b2, c1, c2, epsilon: config.epsilon, decay, learningRate: lr, scale
        })
        m[i].assign(m1)
        v[i].assign(v1)
        w.variable.assign(p1)
      })
    })
  }
  return {
    config,
    weights,
    step: () => t,
    currentLearningRate: () => learningRate(config, t),
    apply,
    exportState: () => {
      const step = t
      return Effect.map(Effect.promise(() => Promise.all([readAll(m), readAll(v)])), ([mm, vv]) => ({ step, names: weights.map((w) => w.name), m: mm, v: vv }))
    },
    importState: (state) => Effect.map(restore(weights, m, v, state), (step) => { t = step }),
    dispose: () => {
      for (const x of [...m, ...v]) x.dispose()
    }
  }
}

/** AdamW as a scoped resource: its moment tensors are disposed when the scope closes. */
export const acquire = (weights: ReadonlyArray<Weight>, config: Config) =>
  Effect.acquireRelease(Effect.sync(() => make(weights, config)), (o) => Effect.sync(() => o.dispose()))
