/**
 * A recipe stage: one phase of an experiment (pretrain, SFT, GRPO, rejection sampling, eval, or a
 * user's own), provided by a `stage` plugin. `run` works on the shared `RunContext` (the `Run` service)
 * and the run's `Rng` and `Metrics` services; a stage that is resumed finds its progress (`stageStep`,
 * `cursor`) in the context and what its trainer had in its `resume` argument, and continues from there.
 */
import { type Config, Plugin } from "@r1flow/core"
import { type Effect, Schema } from "effect"
import type { Resumed, Services, StageRunError } from "./Context.js"
import type * as Recipe from "./Recipe.js"

/** Where a stage's config sits, for its `check`. */
export interface CheckContext {
  /** The config's path in the recipe (`stages[2].config`), the prefix of every problem's path. */
  readonly where: string
  /** The recipe file's directory: relative plugin paths in the config resolve from here. */
  readonly from: string
  /** The recipe's stages and this one's index among them, for checks across stages (a source or model an earlier stage makes). */
  readonly stages?: ReadonlyArray<typeof Recipe.StageEntry.Type>
  readonly index?: number
  /** The recipe's task names (one, or a mixture's), for checks of rewards routed by task. */
  readonly tasks?: ReadonlyArray<string>
}

/** What a stage plugin's `make(config)` returns. */
export interface RecipeStage {
  /** The stage's kind (`grpo`, …); the recipe entry's `name` labels this instance. */
  readonly kind: string
  /**
   * Runs (or continues) the stage. `label` is the entry's name, for logs, metrics and files; `resume` is
   * what a checkpoint inside this stage kept of its trainer (`Option.none` unless the run resumes here).
   */
  readonly run: (label: string, resume: Resumed) => Effect.Effect<void, StageRunError, Services>
  /**
   * Checks what the config schema cannot: the plugins the stage loads when it runs (rewards) and
   * their own config sections, with unknown keys refused. The run calls it for every stage before
   * the first one runs, so a typo deep in the last stage costs nothing.
   */
  readonly check?: (at: CheckContext) => Effect.Effect<void, Config.ConfigError | Plugin.PluginError>
}

/** A stage plugin: what a stage package exports by default. */
export type StagePlugin<C> = Plugin.Plugin<"stage", C, RecipeStage>

/**
 * Defines a stage plugin (the default export of a stage package or module). The run decodes the stage's
 * whole config with `config` before any stage runs, so the schema should hold every section the stage
 * reads (nested plugin configs, e.g. a reward's own `config`, stay opaque to it and are decoded by their
 * plugin's schema in `check`); values the run supplies (the tokenizer's ids, …) are arguments, never keys.
 */
export const define = <C>(def: {
  readonly name: string
  readonly version: string
  readonly description: string
  readonly config: Schema.Codec<C, any>
  readonly make: (config: C) => RecipeStage
}): StagePlugin<C> => Plugin.make("stage", def)

/**
 * A key of a stage's config that the run sets (the tokenizer's ids, …), not the recipe: present in a
 * recipe, it is refused with `what` sets it (`stages[2].config.update.padId: set by the run (…)`), never
 * silently overridden either way.
 */
export const setByRun = (what: string) => Schema.optionalKey(Schema.Never.annotate({ message: `set by the run (${what}), not by the recipe` }))

/** Checks the object a stage plugin's `make` returned. */
export const isRecipeStage = (u: unknown): u is RecipeStage =>
  typeof u === "object" && u !== null && typeof (u as RecipeStage).run === "function" && typeof (u as RecipeStage).kind === "string"
