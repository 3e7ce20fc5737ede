/**
 * The GRPO trainer: the update's config and what an update runs on: the policy (trained in place), the
 * frozen reference π_ref (β > 0 only: β = 0 keeps no reference in memory at all), AdamW, the guard and the
 * progress a checkpoint saves. The update itself (DeepSeekMath Algorithm 1, inner loop) is `Step.update`.
 */
import { type Batch, Stage, type Rng } from "@r1flow/core"
import { Lora, Transformer } from "@r1flow/model"
import type { RecordBatch } from "apache-arrow"
import { Effect, Schema, type Scope } from "effect"
import * as Guard from "./Guard.js"
import * as Loss from "./Loss.js"
import * as Optimizer from "./Optimizer.js"
import * as Step from "./Step.js"
import type * as Train from "./Train.js"

const positiveInt = Schema.Int.check(Schema.isGreaterThan(0))

/** Policy-update configuration. Unset batch sizes mean "the whole rollout batch". */
export const Config = Schema.Struct({
  loss: Loss.Config.pipe(Schema.withDecodingDefaultKey(Effect.succeed({}))),
  optimizer: Optimizer.Config.pipe(Schema.withDecodingDefaultKey(Effect.succeed({}))),
  guard: Guard.Config.pipe(Schema.withDecodingDefaultKey(Effect.succeed({}))),
  /** μ: passes over each rollout batch. */
  iterations: positiveInt.pipe(Schema.withDecodingDefaultKey(Effect.succeed(1))),
  /** Sequences per optimizer step. */
  miniBatchSize: Schema.optionalKey(positiveInt),
  /** Sequences per forward/backward pass (gradient accumulation over a minibatch). */
  microBatchSize: Schema.optionalKey(positiveInt),
  /** Copy π_θ into π_ref every this many rollout batches; 0 never. */
  refSyncSteps: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(0))),
  /** Mask completions whose finish reason is `length` out of the loss. */
  maskTruncated: Schema.Boolean.pipe(Schema.withDecodingDefaultKey(Effect.succeed(false))),
  /**
   * Activation checkpointing in the policy's gradient pass (`LogProbs.Options.checkpoint`): each block keeps
   * only its input and runs again in the backward, a second forward for the blocks' activations. The same
   * gradients. The passes without a gradient (π_ref, TIS's π_old) never checkpoint: they keep nothing anyway.
   */
  activationCheckpointing: Schema.Boolean.pipe(Schema.withDecodingDefaultKey(Effect.succeed(false))),
  padId: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(0)))
})
/** Policy-update configuration. */
export type Config = typeof Config.Type

/** How far a trainer has got: advanced by `Step.update`, saved in checkpoints. */
export interface Progress {
  /** Rollout batches trained on. */
  steps: number
  /** Optimizer steps attempted (applied or skipped). */
  updates: number
}

/** The GRPO trainer: policy, optional frozen reference, AdamW, the guard, and its progress. */
export interface Trainer {
  readonly config: Config
  readonly policy: Transformer.Model
  /** `null` when β = 0. */
  readonly reference: () => Transformer.Model | null
  readonly optimizer: Optimizer.AdamW
  readonly guard: Guard.Guard
  /** Orders rows into minibatches. */
  readonly rng: Rng.Stream
  readonly progress: Progress
  /** Rollout batches trained on so far. */
  readonly steps: () => number
  /** Everything besides the weights a resumed run needs: optimizer moments and step, counters, guard. */
  readonly exportState: () => Effect.Effect<Train.TrainerState>
  /** Restores `exportState`'s result (the weights are restored separately). */
  readonly importState: (state: Train.TrainerState) => Effect.Effect<void, Optimizer.StateError>
  /** `Step.update` on this trainer: one policy update on a rollout batch with advantages, its diagnostics as metrics. */
  readonly step: (batch: RecordBatch<Batch.AdvantagesType>) => Effect.Effect<Record<string, number>, Stage.StageError | Guard.NonFiniteError>
}

/**
 * Builds the trainer around `policy` (trained in place). Acquires AdamW over its trainable weights and,
 * when β > 0, a frozen clone of the policy as π_ref (under LoRA the base with the adapters off instead);
 * both are freed when the scope closes. `rng` orders rows into minibatches.
 */
export const make = (
  policy: Transformer.Model,
  config: Config,
  rng: Rng.Stream
): Effect.Effect<Trainer, Stage.StageError, Scope.Scope> =>
  Effect.gen(function*() {
    const problem = Loss.validate(config.loss)
    if (problem !== undefined) return yield* new Stage.StageError({ stage: "grpo/update", message: problem })
    if (policy.lora !== undefined && config.loss.beta > 0 && config.refSyncSteps > 0) {
      return yield* new Stage.StageError({ stage: "grpo/update", message: "refSyncSteps must be 0 under LoRA: the reference is the base model with the adapters off, which never moves" })
    }
    const optimizer = yield* Optimizer.acquire(Transformer.trainableWeights(policy), config.optimizer)
    // Under LoRA π_ref is the frozen base seen without the adapters: no second copy of the weights.
    const reference = config.loss.beta <= 0
      ? null
      : policy.lora !== undefined
      ? Lora.disabled(policy)
      : yield* Effect.acquireRelease(Effect.promise(() => Transformer.clone(policy)), (m) => Effect.sync(() => m.dispose()))
    const guard = Guard.make(config.guard)
    const progress: Progress = { steps: 0, updates: 0 }
    const trainer: Trainer = {
      config,
      policy,
      reference: () => reference,
      optimizer,
      guard,
      rng,
      progress,
      steps: () => progress.steps,
      exportState: () => Effect.map(optimizer.exportState(), (o) => ({ optimizer: o, steps: progress.steps, updates: progress.updates, guard: guard.exportState() })),
      importState: (state) =>
        Effect.map(optimizer.importState(state.optimizer), () => {
          progress.steps = state.steps
          progress.updates = state.updates
          guard.importState(state.guard)
        }),
      step: (batch) => Step.update(trainer, batch)
    }
    return trainer
  })
