/**
 * User stages: batch-to-batch steps a user puts at a named point of a recipe stage's pipeline (GRPO's
 * `afterRollout`, `afterRewards`, `afterAdvantages`: a filter, a reward shaper, an advantage estimator).
 * Each is a `pipeline-stage` plugin, a package or a module path loaded through the same registry as rewards,
 * whose default export is
 *
 *   export default UserStage.define({ name, version, description, config, make: (config) => Stage.make({ … }) })
 *
 * `make(config)` returns a core `Stage`: its `input` schema is what it reads, its `output` what it adds or
 * rewrites. A pipeline that holds it checks those schemas against its neighbours' when it is built
 * (`Pipeline.make`), so a stage that reads a column nothing before it gives is refused before a run starts.
 * Unlike rewards, user stages run in the trainer's thread: they see the Arrow batch itself, not a copy.
 */
import { Effect, Schema } from "effect"
import type * as CoreConfig from "./Config.js"
import * as Plugin from "./Plugin.js"
import * as Stage from "./Stage.js"

/** One configured user stage: the plugin and its config section. */
export const Entry = Schema.Struct({
  /** Package name (`my-filter`) or path (`./stages/shape.mjs`, relative to the recipe's directory). */
  plugin: Schema.String,
  /** The plugin's own config section (decoded by the plugin's schema; absent: `{}`). */
  config: Schema.optionalKey(Schema.Unknown)
})
/** One configured user stage. */
export type Entry = typeof Entry.Type

/** A stage a plugin makes: it needs no Effect services (it is given none). */
export type UserStage = Stage.Stage<any, any, never>

/** A pipeline-stage plugin: what a user stage's package or module exports by default. */
export type UserStagePlugin<C = any> = Plugin.Plugin<"pipeline-stage", C, UserStage>

/** Defines a pipeline-stage plugin (the default export); `make` is called once per configured use. */
export const define = <C>(def: {
  readonly name: string
  readonly version: string
  readonly description: string
  readonly config: Schema.Codec<C, any>
  readonly make: (config: C) => UserStage
}): UserStagePlugin<C> => Plugin.make("pipeline-stage", def)

/**
 * Loads `entry` (at `where` in the config, the prefix of every error): the plugin by package or path from
 * `from`, its `config` decoded by the plugin's schema (unknown keys refused), then `make`, whose result must
 * be a stage. Nothing runs yet; the stage's schemas are for the pipeline to check.
 */
export const load = (
  entry: Entry,
  options: { readonly from: string; readonly where: string }
): Effect.Effect<UserStage, Plugin.PluginError | CoreConfig.ConfigError> =>
  Effect.gen(function*() {
    const plugin = yield* Plugin.load(entry.plugin, { kind: "pipeline-stage", from: options.from }).pipe(
      Effect.mapError((e) => new Plugin.PluginError({ plugin: e.plugin, message: `${options.where}.plugin: ${e.message}` }))
    )
    const stage = yield* Plugin.instantiate(plugin, entry.config, `${options.where}.config`)
    if (!Stage.isStage(stage)) {
      return yield* new Plugin.PluginError({
        plugin: entry.plugin,
        message: `${options.where}: make(config) did not return a stage (an object with name, input and output Arrow schemas, and run; see Stage.make)`
      })
    }
    // A plugin's stage is handed no services, so whatever it declares it can need none.
    return stage as UserStage
  })

/** Loads every entry of a list at `where` (`stages[2].config.afterRewards`), in order. */
export const loadAll = (
  entries: ReadonlyArray<Entry> | undefined,
  options: { readonly from: string; readonly where: string }
): Effect.Effect<Array<UserStage>, Plugin.PluginError | CoreConfig.ConfigError> =>
  Effect.forEach(entries ?? [], (entry, i) => load(entry, { from: options.from, where: `${options.where}[${i}]` }))
