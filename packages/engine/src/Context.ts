/**
 * What every recipe stage runs against: the run's data, tokenizer, policy, progress and run directory
 * (`Run`), with the run's random streams and metrics as the services core declares (`Rng`, `Metrics`).
 * One context lives for the whole run; stages read it and may replace the policy (SFT and GRPO train it
 * in place; `student` swaps in a fresh one).
 */
import type { Metrics, Rng } from "@r1flow/core"
import type { Corpus, Task } from "@r1flow/datasets"
import type { Transformer } from "@r1flow/model"
import type { Codec } from "@r1flow/tokenizer"
import type * as Recipe from "./Recipe.js"
import type * as RunCheckpoint from "./RunCheckpoint.js"
import type * as RunDir from "./RunDir.js"
import type { Train } from "@r1flow/grpo"
import { Context as EffectContext, type Effect, type Option, Schema } from "effect"

/** The run's task data: train and held-out prompts, plus the base corpus for pretraining. */
export interface Data {
  readonly train: ReadonlyArray<Task.Row>
  readonly test: ReadonlyArray<Task.Row>
  /** Worked solutions for pretraining / cold start (empty for real-data tasks without one). */
  readonly corpus: ReadonlyArray<Corpus.Row>
}

/** Mutable progress shared by the stages: saved in checkpoints, restored on resume. */
export interface Progress {
  /** Global optimisation step across all stages (metrics are indexed by it). */
  step: number
  /** Index of the stage being run (stages before it are done). */
  stageIndex: number
  /** Steps done inside the current stage. */
  stageStep: number
  /** Position in the current stage's shuffled data order. */
  cursor: number
}

/** The state every stage plugin runs against. */
export interface RunContext {
  readonly recipe: Recipe.Recipe
  /** The recipe file's directory: relative plugin paths in the recipe (stages, rewards) resolve from here. */
  readonly recipeDir: string
  readonly dir: RunDir.RunDir
  readonly tokenizer: Codec
  readonly data: Data
  /**
   * The policy being trained. Mutable on purpose: `student` replaces it (the teacher saved and freed), and
   * every later stage, the checkpoints and the run's finalizer must see the new one.
   */
  policy: Transformer.Model
  readonly progress: Progress
  /** Prompt ids for a question under the recipe's template. */
  readonly promptIds: (question: string) => Int32Array
  /** A line on the terminal (progress, results). */
  readonly log: (line: string) => void
  /**
   * Metrics that depend on wall-clock time (`perf/*`): kept out of `metrics.jsonl`, which must be
   * identical between two runs of the same config and seed; they go to `perf.jsonl`. The run adds the
   * running stage's memory peaks so far to every line (`perf/peak_rss_bytes`, `perf/peak_tensor_bytes`: `Memory`).
   */
  readonly perf: (step: number, values: Readonly<Record<string, number>>) => void
  /** Steps between checkpoints inside a stage (0: only at the end of each stage). */
  readonly checkpointEvery: number
  /** Saves a checkpoint now, with the running stage's trainer state when it has one. */
  readonly checkpoint: (stage: RunCheckpoint.StageState | null) => Effect.Effect<void, StageRunError>
}

/**
 * What a checkpoint inside a stage kept of its trainer, handed to that stage (`RecipeStage.run`'s
 * `resume`) when the run resumes there. `reference` (GRPO's π_ref, when β > 0) is the stage's to free.
 */
export interface Resume {
  readonly trainer: Train.TrainerState | null
  readonly reference: Transformer.Model | null
}

/** A stage's resume state: `Option.some` only for the stage a resumed run continues inside. */
export type Resumed = Option.Option<Resume>

/** The services every recipe stage runs with: the run context and the run's `Rng` and `Metrics`. */
export type Services = Run | Rng.Rng | Metrics.Metrics

/** Splits step metrics into reproducible ones and wall-clock ones (`perf/*`). */
export const splitPerf = (values: Readonly<Record<string, number>>): { metrics: Record<string, number>; perf: Record<string, number> } => {
  const metrics: Record<string, number> = {}, perf: Record<string, number> = {}
  for (const [k, v] of Object.entries(values)) (k.startsWith("perf/") || k.includes("/perf/") ? perf : metrics)[k] = v
  return { metrics, perf }
}

/** The run context as an Effect service. */
export class Run extends EffectContext.Service<Run, RunContext>()("@r1flow/engine/Run") {}

/** A recipe stage failed; the message names the stage and what went wrong. */
export class StageRunError extends Schema.TaggedError<StageRunError>()("StageRunError", {
  stage: Schema.String,
  message: Schema.String,
  cause: Schema.optional(Schema.Defect())
}) {}
