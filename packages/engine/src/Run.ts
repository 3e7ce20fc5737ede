/**
 * Runs a recipe: decode the config, pick the backend, make the run directory, build the data, the
 * tokenizer and the policy, then run each stage plugin in order and write the report.
 */
import { Config as CoreConfig, Metrics, Plugin, Rng } from "@r1flow/core"
import { Backend } from "@r1flow/backend"
import { Checkpoint, Transformer } from "@r1flow/model"
import { Compact, Template, Tokenizer, type Codec } from "@r1flow/tokenizer"
import { Effect, Schema } from "effect"
import { existsSync, readdirSync, readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { Run as RunService, StageRunError, type RunContext } from "./Context.js"
import * as Data from "./Data.js"
import * as Recipe from "./Recipe.js"
import * as RecipeStage from "./RecipeStage.js"
import * as Report from "./Report.js"
import * as RunDir from "./RunDir.js"

/** The folder of built-in recipes (`r1-zero.json`, `r1.json`, `distill.json`). */
export const recipesDir = resolve(dirname(fileURLToPath(import.meta.url)), "..", "recipes")

/** A recipe name (`r1-zero`) or a path to a recipe file → the file's path. */
export const resolveRecipe = (nameOrPath: string): string => {
  const builtin = join(recipesDir, `${nameOrPath}.json`)
  return existsSync(nameOrPath) || nameOrPath.includes("/") || nameOrPath.endsWith(".json") ? resolve(nameOrPath) : builtin
}

/** The built-in recipe names. */
export const builtinRecipes = (): Array<string> =>
  readdirSync(recipesDir).filter((f) => f.endsWith(".json")).map((f) => f.slice(0, -5)).sort()

/** What a finished run returns. */
export interface Result {
  readonly dir: RunDir.RunDir
  readonly recipe: Recipe.Recipe
  readonly backend: Backend.Info
  readonly evals: ReadonlyArray<Report.EvalRecord>
  readonly seconds: number
}

/** How to run. */
export interface Options {
  /** `key.path=value` overrides applied to the recipe before decoding. */
  readonly overrides?: ReadonlyArray<string>
  readonly log?: (line: string) => void
}

const require = createRequire(import.meta.url)

const fail = (stage: string) => (e: { readonly message: string }) => new StageRunError({ stage, message: e.message, cause: e })

/** Decodes a recipe file with overrides; errors name the file and the key path. */
export const load = (path: string, overrides: ReadonlyArray<string> = []) =>
  Effect.gen(function*() {
    const raw = yield* CoreConfig.readJson(path)
    const withOverrides = yield* CoreConfig.applyOverrides(raw, overrides)
    const recipe = yield* CoreConfig.decode(Recipe.Recipe, withOverrides, { source: overrides.length > 0 ? `${path} with --set ${overrides.join(" ")}` : path })
    return { recipe, resolved: withOverrides }
  })

const buildTokenizer = (recipe: Recipe.Recipe, data: RunContext["data"], dir: RunDir.RunDir) =>
  Effect.gen(function*() {
    if (recipe.tokenizer.kind === "standard") return Tokenizer.makeStandard(recipe.tokenizer.encoding)
    // The compact vocabulary is learned from what the model will read and write: templated prompts and corpus solutions.
    const texts: Array<string> = []
    for (const r of data.corpus) texts.push(r.completion)
    for (const r of data.train.slice(0, 2000)) texts.push(recipe.template === "chat" ? r.question : Template.r1ZeroText(r.question))
    const vocab = Compact.build({ base: recipe.tokenizer.base, corpus: texts, size: recipe.tokenizer.size })
    yield* Compact.save(join(dir.root, "tokenizer"), vocab)
    return Tokenizer.makeCompact(vocab)
  })

/** Runs `recipePath` to the end. */
export const run = (recipePath: string, options: Options = {}) =>
  Effect.gen(function*() {
    const t0 = performance.now()
    const log = options.log ?? ((line: string) => console.log(line))
    const { recipe, resolved } = yield* load(recipePath, options.overrides)
    const forced = process.env[Backend.ENV_VAR] ?? (recipe.backend !== undefined && recipe.backend !== "auto" ? recipe.backend : undefined)
    const backend = yield* Effect.tryPromise({
      try: () => Backend.init(forced !== undefined ? { force: forced as Backend.Name } : {}),
      catch: (e) => fail("backend")(e instanceof Error ? e : new Error(String(e)))
    })
    log(`backend: ${backend.name} (${backend.reason})`)
    const dir = yield* RunDir.create(recipe.runsDir ?? "runs", recipe.name)
    log(`run directory: ${dir.root}`)
    const corpusEntry = recipe.stages.find((s) => s.stage === "pretrain" || s.stage === "sft")
    void corpusEntry
    const data = yield* Data.build(recipe.task, recipe.seed, { corpusSize: recipe.corpus?.count ?? 0, ...(recipe.corpus?.wrongFraction !== undefined ? { wrongFraction: recipe.corpus.wrongFraction } : {}) })
    log(`data: ${data.train.length} train / ${data.test.length} held-out problems, ${data.corpus.length} corpus solutions`)
    const tokenizer: Codec = yield* Effect.acquireRelease(buildTokenizer(recipe, data, dir), (t) => Effect.sync(() => t.free()))
    const rng = Rng.makeService(recipe.seed)
    const policy = recipe.model.checkpoint !== undefined
      ? yield* Checkpoint.load(recipe.model.checkpoint)
      : Transformer.init(Recipe.modelConfig(recipe.model, tokenizer.vocabSize), rng.stream("model/init"))
    log(`policy: ${Transformer.parameterCount(policy).toLocaleString("en-US")} parameters, vocabulary ${tokenizer.vocabSize} (${tokenizer.name})`)
    const manifest = {
      name: recipe.name,
      seed: recipe.seed,
      recipe: resolved,
      recipeFile: recipePath,
      backend,
      tokenizer: { name: tokenizer.name, vocabSize: tokenizer.vocabSize },
      parameters: Transformer.parameterCount(policy),
      started: new Date().toISOString(),
      ...RunDir.environment(RunDir.versionsOf(["@r1flow/core", "@r1flow/engine", "effect", "apache-arrow", "@tensorflow/tfjs", "@tensorflow/tfjs-backend-wasm", "@dqbd/tiktoken"], require))
    }
    yield* RunDir.write(dir.manifest, JSON.stringify(manifest, null, 2))
    const metrics = yield* Effect.acquireRelease(Effect.sync(() => Metrics.make([Metrics.jsonlSink(dir.metrics)])), () => Effect.void)
    const ctx: RunContext = {
      recipe,
      dir,
      rng,
      metrics,
      tokenizer,
      data,
      policy,
      progress: { step: 0, stageIndex: 0, stageStep: 0, cursor: 0 },
      promptIds: (q) => Template.prompt(tokenizer, recipe.template ?? "r1-zero", q),
      log,
      stageState: new Map()
    }
    yield* Effect.addFinalizer(() => Effect.sync(() => ctx.policy.dispose()))
    for (const [i, entry] of recipe.stages.entries()) {
      const label = entry.name ?? entry.stage
      const spec = Recipe.builtinStages[entry.stage] ?? entry.stage
      const plugin = yield* Plugin.load(spec, { kind: "stage", from: dirname(recipePath) })
      const stage = yield* Plugin.instantiate(plugin, entry.config, `stages[${i}].config`)
      if (!RecipeStage.isRecipeStage(stage)) return yield* new Plugin.PluginError({ plugin: spec, message: "make(config) did not return a recipe stage ({ kind, run })" })
      ctx.progress.stageIndex = i
      ctx.progress.stageStep = 0
      ctx.progress.cursor = 0
      const s0 = performance.now()
      log(`── stage ${i + 1}/${recipe.stages.length}: ${label} (${plugin.name}@${plugin.version})`)
      yield* stage.run(label).pipe(Effect.provideService(RunService, ctx))
      log(`── ${label} done in ${((performance.now() - s0) / 1000).toFixed(1)} s`)
    }
    const evals = readEvals(dir)
    const seconds = (performance.now() - t0) / 1000
    yield* RunDir.write(join(dir.root, "summary.json"), JSON.stringify({ seconds, backend: backend.name, evals: evals.map(({ samples: _s, ...e }) => e) }, null, 2))
    yield* RunDir.write(dir.report, Report.render({ title: `r1flow run ${recipe.name}`, manifest, metrics: metrics.history(), evals }))
    return { dir, recipe, backend, evals, seconds } satisfies Result
  }).pipe(Effect.scoped)

/** Every `evals/*.json` of a run, in step order. */
export const readEvals = (dir: RunDir.RunDir): Array<Report.EvalRecord> =>
  existsSync(dir.evals)
    ? readdirSync(dir.evals)
        .filter((f) => f.endsWith(".json"))
        .map((f) => JSON.parse(readFileSync(join(dir.evals, f), "utf8")) as Report.EvalRecord)
        .sort((a, b) => a.step - b.step || a.name.localeCompare(b.name))
    : []

/** Writes `report.html` for an existing run directory. */
export const report = (root: string) =>
  Effect.gen(function*() {
    const dir = RunDir.at(root)
    const manifest = (yield* RunDir.readJson(dir.manifest)) as Record<string, unknown>
    const { entries } = Metrics.readJsonl(dir.metrics)
    yield* RunDir.write(dir.report, Report.render({ title: `r1flow run ${String(manifest.name ?? root)}`, manifest, metrics: entries, evals: readEvals(dir) }))
    return dir.report
  })

void Schema
