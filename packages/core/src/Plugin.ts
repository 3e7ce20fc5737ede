/**
 * Plugins: npm packages (or local modules) whose default export describes a reward, a stage or
 * another swappable part. Built-in plugins load through the same `load` as third-party ones.
 *
 * A plugin's default export must match `Descriptor`: `kind`, `name`, `version` (semver),
 * `description`, `config` (an Effect Schema for its config section) and `make(config)`.
 */
import { readdir, readFile } from "node:fs/promises"
import { createRequire } from "node:module"
import { join, resolve as resolvePath } from "node:path"
import { pathToFileURL } from "node:url"
import { Effect, Predicate, Schema } from "effect"
import * as Config from "./Config.js"

/**
 * The kinds of part a plugin can provide: a reward, a recipe stage (a phase of a run: pretrain, GRPO, …),
 * or a pipeline stage (a batch-to-batch step a user puts inside one, see `UserStage`).
 */
export const Kind = Schema.Literals(["reward", "stage", "pipeline-stage"])
/** The kinds of part a plugin can provide. */
export type Kind = typeof Kind.Type

/** What a plugin package exports by default. `A` is what `make` returns (a reward, a stage, …). */
export interface Plugin<K extends Kind = Kind, C = any, A = unknown> {
  readonly kind: K
  readonly name: string
  readonly version: string
  readonly description: string
  /** Decodes the plugin's section of the experiment config. */
  readonly config: Schema.Codec<C, any>
  readonly make: (config: C) => A
}

/** The runtime shape a default export must have (checked on load). */
export const Descriptor = Schema.Struct({
  kind: Kind,
  name: Schema.String.check(Schema.isPattern(/^[a-z0-9][a-z0-9-]*$/)),
  version: Schema.String.check(Schema.isPattern(/^\d+\.\d+\.\d+(?:[-+].*)?$/)),
  description: Schema.String,
  config: Schema.declare((u): u is Schema.Top => Schema.isSchema(u), { expected: "an Effect Schema" }),
  make: Schema.declare((u): u is (config: unknown) => unknown => Predicate.isFunction(u), { expected: "a function" })
})

/** A plugin could not be loaded, validated or instantiated. */
export class PluginError extends Schema.TaggedError<PluginError>()("PluginError", {
  /** The package name or path the plugin was asked for. */
  plugin: Schema.String,
  message: Schema.String
}) {}

/** Defines a plugin (typed helper for a package's default export). */
export const make = <K extends Kind, C, A>(kind: K, def: Omit<Plugin<K, C, A>, "kind">): Plugin<K, C, A> => ({ kind, ...def })

const isPath = (spec: string) => spec.startsWith(".") || spec.startsWith("/")

const resolveSpecifier = (spec: string, from: string): string => {
  if (isPath(spec)) return pathToFileURL(resolvePath(from, spec)).href
  // Resolve from the user's directory so their installed plugins are found, not ours.
  try {
    return pathToFileURL(createRequire(join(from, "package.json")).resolve(spec)).href
  } catch {
    return spec
  }
}

/** Checks an already-imported module's default export against `Descriptor` (and `kind` when given). */
export const validate = (spec: string, mod: unknown, kind?: Kind): Effect.Effect<Plugin, PluginError> =>
  Effect.gen(function*() {
    const candidate = Predicate.isObject(mod) && "default" in mod ? (mod as { default: unknown }).default : undefined
    if (candidate === undefined) {
      return yield* new PluginError({ plugin: spec, message: "the module has no default export; a plugin must `export default` its descriptor" })
    }
    const decoded = yield* Schema.decodeUnknownEffect(Descriptor, { errors: "all" })(candidate).pipe(
      Effect.mapError((e) => new PluginError({ plugin: spec, message: `its default export is not a valid plugin: ${Config.problems(e.issue, candidate).join("; ")}` }))
    )
    if (kind !== undefined && decoded.kind !== kind) {
      return yield* new PluginError({ plugin: spec, message: `is a ${decoded.kind} plugin, but a ${kind} plugin is needed here` })
    }
    return candidate as Plugin
  })

/** Imports a plugin by package name or path (relative to `from`, default the working directory) and validates it. */
export const load = (spec: string, options: { readonly kind?: Kind; readonly from?: string } = {}): Effect.Effect<Plugin, PluginError> =>
  Effect.tryPromise({
    // A package is first imported as the host resolves it (the nearest node_modules, and a test
    // runner's source conditions); only when that fails is it looked up from `from`.
    try: () =>
      isPath(spec)
        ? import(resolveSpecifier(spec, options.from ?? process.cwd()))
        : import(/* @vite-ignore */ spec).catch((e: NodeJS.ErrnoException) =>
          e.code === "ERR_MODULE_NOT_FOUND" && e.message.includes(spec) ? import(resolveSpecifier(spec, options.from ?? process.cwd())) : Promise.reject(e)
        ),
    catch: (e) => {
      const err = e as NodeJS.ErrnoException
      const notFound = err.code === "ERR_MODULE_NOT_FOUND" || err.code === "MODULE_NOT_FOUND"
      return new PluginError({
        plugin: spec,
        message: notFound ? `cannot find it (is the package installed? ${err.message})` : `importing it failed: ${err.message}`
      })
    }
  }).pipe(Effect.flatMap((mod) => validate(spec, mod, options.kind)))

/** Decodes `rawConfig` (absent: `{}`) with the plugin's schema, unknown keys refused, paths prefixed by `where`. */
export const decodeConfig = <K extends Kind, C, A>(plugin: Plugin<K, C, A>, rawConfig: unknown, where: string): Effect.Effect<C, Config.ConfigError> =>
  Config.decode(plugin.config, rawConfig ?? {}, { source: `plugin ${plugin.name}`, prefix: where })

/** Decodes `rawConfig` with the plugin's schema (paths prefixed by `where`) and calls `make`. */
export const instantiate = <K extends Kind, C, A>(
  plugin: Plugin<K, C, A>,
  rawConfig: unknown,
  where: string
): Effect.Effect<A, PluginError | Config.ConfigError> =>
  Effect.flatMap(decodeConfig(plugin, rawConfig, where), (config) =>
    Effect.try({
      try: () => plugin.make(config),
      catch: (e) => new PluginError({ plugin: plugin.name, message: `make(config) threw: ${(e as Error).message}` })
    })
  )

/** An installed package that declares itself an r1flow plugin (keyword `r1flow-plugin`). */
export interface Installed {
  readonly name: string
  readonly version: string
  readonly dir: string
}

/** Lists packages under `nodeModules` whose package.json keywords include `r1flow-plugin`. */
export const discover = (nodeModules: string): Effect.Effect<Array<Installed>> =>
  Effect.promise(async () => {
    const found: Array<Installed> = []
    const readPkg = async (dir: string) => {
      const pkg = JSON.parse(await readFile(join(dir, "package.json"), "utf8").catch(() => "{}")) as { name?: string; version?: string; keywords?: Array<string> }
      if (pkg.name !== undefined && pkg.keywords?.includes("r1flow-plugin")) found.push({ name: pkg.name, version: pkg.version ?? "0.0.0", dir })
    }
    const entries = await readdir(nodeModules).catch(() => [] as Array<string>)
    for (const e of entries) {
      if (e.startsWith(".")) continue
      if (e.startsWith("@")) {
        for (const s of await readdir(join(nodeModules, e)).catch(() => [] as Array<string>)) await readPkg(join(nodeModules, e, s))
      } else await readPkg(join(nodeModules, e))
    }
    return found.sort((a, b) => a.name.localeCompare(b.name))
  })
