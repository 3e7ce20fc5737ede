/**
 * Runs a recipe: decode the config (every stage's whole, before anything else), pick the backend, make the
 * run directory, build the data, the tokenizer and the policy, then run each stage plugin in order with the
 * run's services (`Run`, `Rng`, `Metrics`) and write the report.
 */
import { Config as CoreConfig, Metrics, Plugin, Rng } from "@r1flow/core"
import { Backend } from "@r1flow/backend"
import { Checkpoint, Lora, Transformer } from "@r1flow/model"
import { ColdStart, Loaders } from "@r1flow/datasets"
import { Compact, type HfTokenizer, Template, Tokenizer, type Codec } from "@r1flow/tokenizer"
import { Effect, Layer, Option } from "effect"
import { existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { basename, dirname, isAbsolute, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { Run as RunService, StageRunError, type Resumed, type RunContext, type Services } from "./Context.js"
import * as Compute from "./Compute.js"
import * as Data from "./Data.js"
import * as Evaluate from "./Evaluate.js"
import * as Memory from "./Memory.js"
import * as LoraBase from "./LoraBase.js"
import * as ModelSource from "./ModelSource.js"
import * as Recipe from "./Recipe.js"
import * as RecipeStage from "./RecipeStage.js"
import * as Report from "./Report.js"
import * as RunCheckpoint from "./RunCheckpoint.js"
import * as RunDir from "./RunDir.js"
import * as RunLock from "./RunLock.js"

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

/** How to resume. */
export interface ResumeOptions {
  readonly log?: (line: string) => void
  /**
   * Continue although the checkpoint was made on other maths (backend, kernel set, GEMM) than this
   * process has, with a warning; the resumed run is then not bitwise identical to one that never stopped.
   */
  readonly allowBackendChange?: boolean
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

/** Whether a stage is an `sft` on R1's cold-start set (its config is still undecoded here). */
const isColdStart = (s: Recipe.Recipe["stages"][number]) => s.stage === "sft" && (s.config as { source?: { kind?: unknown } } | undefined)?.source?.kind === "cold-start"

/**
 * A compact vocabulary learned from what the model will read and write: templated prompts, corpus
 * solutions and, when a stage trains on R1's cold-start set, its chains of thought (else their words,
 * unseen, would be spelled in pieces: chains twice as long).
 */
const buildCompact = (recipe: Recipe.Recipe, tokenizer: Extract<Recipe.Recipe["tokenizer"], { kind: "compact" }>, data: RunContext["data"]) => {
  const texts: Array<string> = []
  for (const r of data.corpus) texts.push(r.completion)
  for (const r of data.train.slice(0, 2000)) texts.push(recipe.template === "chat" ? r.question : Template.r1ZeroText(r.question))
  if (recipe.stages.some(isColdStart)) for (const e of ColdStart.build(data.train.slice(0, 2000), { seed: recipe.seed }).examples) texts.push(e.completion)
  return Compact.build({ base: tokenizer.base, corpus: texts, size: tokenizer.size, splitDigits: tokenizer.splitDigits ?? false })
}

/**
 * The run's tokenizer, and the compact vocabulary the run directory keeps (null for a standard encoding or a
 * Hugging Face tokenizer, read from `hfDir`: default its `dir`, else `model.from`, as the recipe gives them).
 * A compact vocabulary is learned from the run's data, or read from the run a `model.checkpoint` came from.
 */
const buildTokenizer = (
  recipe: Recipe.Recipe,
  data: RunContext["data"],
  hfDir?: string
): Effect.Effect<{ readonly codec: Codec; readonly vocab: Compact.Vocab | null; readonly readFrom?: string }, ModelSource.ModelSourceError> => {
  const t = recipe.tokenizer
  if (t.kind === "hf") return Effect.map(ModelSource.loadTokenizer(hfDir ?? t.dir ?? recipe.model.from ?? "."), (codec) => ({ codec, vocab: null }))
  if (t.kind === "standard") return Effect.sync(() => ({ codec: Tokenizer.makeStandard(t.encoding), vocab: null }))
  const start = recipe.model.checkpoint
  if (start !== undefined) {
    // The checkpoint's own vocabulary (`ModelSource.checkpointVocabDir`), kept by this run as its own.
    return Effect.flatMap(ModelSource.checkpointVocabDir(start), (dir) =>
      Compact.load(dir).pipe(
        Effect.map((vocab) => ({ codec: Tokenizer.makeCompact(vocab), vocab, readFrom: dir })),
        Effect.mapError((e) => new ModelSource.ModelSourceError({ file: dir, key: "model.checkpoint", message: e.message }))
      ))
  }
  return Effect.sync(() => {
    const vocab = buildCompact(recipe, t, data)
    return { codec: Tokenizer.makeCompact(vocab), vocab }
  })
}

/** The tokenizer a run folder keeps: a standard encoding, its compact vocabulary, or its copy of a Hugging Face tokenizer. */
export const loadTokenizer = (recipe: Recipe.Recipe, dir: RunDir.RunDir): Effect.Effect<Codec, ModelSource.ModelSourceError | Compact.CompactVocabError> =>
  recipe.tokenizer.kind === "standard"
    ? Effect.succeed<Codec>(Tokenizer.makeStandard(recipe.tokenizer.encoding))
    : recipe.tokenizer.kind === "hf"
    ? Effect.map(ModelSource.loadTokenizer(join(dir.root, ModelSource.TOKENIZER_DIR)), (c): Codec => c)
    : Effect.map(Compact.load(join(dir.root, "tokenizer")), Tokenizer.makeCompact)

/** Where a training run's metrics go. */
interface Sinks {
  readonly metrics: Metrics.Sink
  readonly perf: Metrics.Sink
}

/** The trainer's `metrics.jsonl` and `perf.jsonl`, closed with the scope; only the lock holder opens them. */
const trainerSinks = (dir: RunDir.RunDir) => Effect.all({ metrics: RunDir.metricsSink(dir.metrics), perf: RunDir.metricsSink(join(dir.root, "perf.jsonl")) })

/** A run's context, its metrics, and the layer of services its stages run with. */
interface Session {
  readonly ctx: RunContext
  readonly metrics: Metrics.Metrics["Service"]
  /** `Run` (the context), `Rng` and `Metrics`, as stages `yield*` them. */
  readonly services: Layer.Layer<Services>
  /** The running stage's memory meter (`execute` sets it): every `perf.jsonl` line gets its peaks so far. */
  readonly memory: { meter: Memory.Meter | null }
}

/**
 * The sinks and state a run (fresh or resumed) shares, and the services over them; `sinks: null` is a
 * standalone eval's session, which writes none of the run's files.
 */
const makeContext = (input: {
  readonly recipe: Recipe.Recipe
  readonly recipePath: string
  readonly resolved: unknown
  readonly dir: RunDir.RunDir
  readonly data: RunContext["data"]
  readonly tokenizer: Codec
  readonly rng: Rng.Rng["Service"]
  readonly policy: Transformer.Model
  readonly progress: RunContext["progress"]
  readonly metrics: ReadonlyArray<Metrics.Entry>
  readonly log: (line: string) => void
  readonly sinks: Sinks | null
  /** The maths this process runs on, recorded in each checkpoint. */
  readonly compute: Compute.Compute
}) =>
  Effect.gen(function*() {
    const { recipe, dir, sinks } = input
    const recipeHash = RunCheckpoint.hashConfig(input.resolved)
    const keep = recipe.checkpoint?.keep ?? 2
    const metrics = Metrics.make(sinks === null ? [] : [sinks.metrics], input.metrics)
    const memory: Session["memory"] = { meter: null }
    const ctx: RunContext = {
      recipe,
      recipeDir: dirname(input.recipePath),
      dir,
      tokenizer: input.tokenizer,
      data: input.data,
      policy: input.policy,
      progress: input.progress,
      promptIds: (q) => Template.prompt(input.tokenizer, recipe.template ?? "r1-zero", q),
      log: input.log,
      perf: (step, values) => {
        if (sinks !== null && Object.keys(values).length > 0) sinks.perf.write({ step, values: memory.meter === null ? values : { ...values, ...Memory.perfValues(memory.meter.sample()) } })
      },
      checkpointEvery: recipe.checkpoint?.every ?? 0,
      checkpoint: (stage) =>
        sinks === null
          ? Effect.fail(new StageRunError({ stage: "checkpoint", message: "a standalone evaluation writes no checkpoints" }))
          : Effect.asVoid(RunCheckpoint.save({ dir, progress: ctx.progress, policy: ctx.policy, rng: input.rng, metrics }, { recipeHash, compute: input.compute }, stage, keep)).pipe(
            Effect.mapError((e) => new StageRunError({ stage: "checkpoint", message: e.message }))
          )
    }
    yield* Effect.addFinalizer(() => Effect.sync(() => ctx.policy.dispose()))
    const services = Layer.mergeAll(Layer.succeed(RunService, ctx), Layer.succeed(Rng.Rng, input.rng), Layer.succeed(Metrics.Metrics, metrics))
    return { ctx, metrics, services, memory } satisfies Session
  })

/** A recipe stage ready to run: its plugin loaded, its config decoded and checked. */
interface Prepared {
  readonly label: string
  readonly plugin: Plugin.Plugin
  readonly stage: RecipeStage.RecipeStage
}

/**
 * Loads the plugin of every stage from `first` on, decodes its whole config by the plugin's schema and
 * runs its `check` (the plugins it will load, their own configs), all before anything of the run is made or
 * changed: a typo in the last stage's config must not cost the minutes of the stages before it. The
 * recipe's `config` of a stage is opaque until here by design (each plugin brings its schema).
 */
const prepare = (recipe: Recipe.Recipe, recipePath: string, first: number) =>
  Effect.gen(function*() {
    const from = dirname(recipePath)
    const stages: Array<Prepared> = []
    for (const [i, entry] of recipe.stages.entries()) {
      if (i < first) continue
      const spec = Recipe.builtinStages[entry.stage] ?? entry.stage
      const where = `stages[${i}].config`
      const plugin = yield* Plugin.load(spec, { kind: "stage", from })
      const stage = yield* Plugin.instantiate(plugin, entry.config, where)
      if (!RecipeStage.isRecipeStage(stage)) return yield* new Plugin.PluginError({ plugin: spec, message: "make(config) did not return a recipe stage ({ kind, run })" })
      if (stage.check !== undefined) yield* stage.check({ where, from, stages: recipe.stages, index: i, tasks: Recipe.tasksOf(recipe.task).map((t) => t.name) })
      stages.push({ label: entry.name ?? entry.stage, plugin, stage })
    }
    return stages
  })

/** A stage's entry in the manifest's `memory` list: its peaks (`Memory.Peaks`), from its start or, resumed, from the resume. */
export interface StageMemory extends Memory.Peaks {
  /** The stage's index in the recipe. */
  readonly stage: number
  readonly label: string
  readonly seconds: number
  /** The stage step a resumed run continued this stage at (the peaks cover only what ran after it). */
  readonly resumedAtStep?: number
}

/** Runs `effect` (one stage) under a memory meter: its peaks so far on every `perf.jsonl` line meanwhile, and at the end. */
const metered = <E, R>(memory: Session["memory"], effect: Effect.Effect<void, E, R>) =>
  Effect.scoped(Effect.gen(function*() {
    const meter = yield* Memory.meter
    memory.meter = meter
    yield* Effect.addFinalizer(() => Effect.sync(() => { memory.meter = null }))
    yield* effect
    return meter.sample()
  }))

/** The manifest with `entry` in its `memory` list (in place of the entry a stopped run left for that stage). */
const withMemory = (manifest: Record<string, unknown>, entry: StageMemory): Record<string, unknown> => {
  const kept = Array.isArray(manifest.memory) ? (manifest.memory as Array<StageMemory>).filter((e) => e.stage !== entry.stage) : []
  return { ...manifest, memory: [...kept, entry].sort((a, b) => a.stage - b.stage) }
}

const mib = (bytes: number) => (bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(2)} GiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`)

/**
 * Runs the prepared stages (those from `ctx.progress.stageIndex` on) with the session's services, each under
 * a memory meter whose peaks go into the manifest (rewritten after each stage), checkpointing after each,
 * then writes the summary and report. `resume` goes to the first of them only.
 */
const execute = (session: Session, stages: ReadonlyArray<Prepared>, started: Record<string, unknown>, t0: number, resume: Resumed = Option.none()) =>
  Effect.gen(function*() {
    const { ctx, services } = session
    const { recipe, dir, log } = ctx
    const first = ctx.progress.stageIndex
    let manifest = started
    for (let i = first; i < recipe.stages.length; i++) {
      const { label, plugin, stage } = stages[i - (recipe.stages.length - stages.length)]
      const s0 = performance.now()
      const resumedAt = ctx.progress.stageStep
      log(`── stage ${i + 1}/${recipe.stages.length}: ${label} (${plugin.name}@${plugin.version})${resumedAt > 0 ? ` (resumed at its step ${resumedAt})` : ""}`)
      const peaks = yield* metered(session.memory, stage.run(label, i === first ? resume : Option.none()).pipe(Effect.provide(services)))
      const seconds = (performance.now() - s0) / 1000
      log(`── ${label} done in ${seconds.toFixed(1)} s; peak RSS ${mib(peaks.peakRssBytes)}${peaks.rssSince === "process" ? " (since the process began)" : ""}, peak tensors ${mib(peaks.peakTensorBytes)}`)
      manifest = withMemory(manifest, { stage: i, label, seconds, ...peaks, ...(resumedAt > 0 ? { resumedAtStep: resumedAt } : {}) })
      yield* RunDir.write(dir.manifest, JSON.stringify(manifest, null, 2))
      ctx.progress.stageIndex = i + 1
      ctx.progress.stageStep = 0
      ctx.progress.cursor = 0
      yield* ctx.checkpoint(null)
    }
    const evals = readEvals(dir)
    const seconds = (performance.now() - t0) / 1000
    yield* RunDir.write(join(dir.root, "summary.json"), JSON.stringify({ seconds, evals: evals.map(({ samples: _s, ...e }) => e) }, null, 2))
    yield* RunDir.write(dir.report, Report.render({ title: `r1flow run ${recipe.name}`, manifest, metrics: session.metrics.history(), evals }))
    return { dir, recipe, backend: manifest.backend as Backend.Info, evals, seconds } satisfies Result
  })

/**
 * Sets up the backend: the one `R1FLOW_BACKEND` or the recipe forces, else the automatic choice, which takes
 * the run's size (`bytesNeeded`, `Memory.footprint`) to pick between wasm and cpu.
 */
const initBackend = (recipe: Recipe.Recipe, bytesNeeded?: number) => {
  const forced = process.env[Backend.ENV_VAR] ?? (recipe.backend !== undefined && recipe.backend !== "auto" ? recipe.backend : undefined)
  return Effect.tryPromise({
    try: () => Backend.init({ ...(forced !== undefined ? { force: forced as Backend.Name } : {}), ...(bytesNeeded !== undefined ? { bytesNeeded } : {}) }),
    catch: (e) => fail("backend")(e instanceof Error ? e : new Error(String(e)))
  })
}

/** The bytes a run of `recipe` with a policy of `config` holds in weights (`Memory.footprint`, `Backend.estimate`). */
export const bytesNeeded = (recipe: Recipe.Recipe, config: Transformer.Config): number => Backend.estimate(Memory.footprint(recipe, config, recipe.model.lora))

/** The size a run's backend was chosen by (its manifest's), so that resuming or evaluating it makes the same choice. */
const recordedBytes = (manifest: Record<string, unknown>): number | undefined => (manifest.backend as Backend.Info | undefined)?.bytesNeeded

/** The recipe's task data and, for generated tasks, its base corpus. */
const buildData = (recipe: Recipe.Recipe) =>
  Data.build(recipe.task, recipe.seed, { corpusSize: recipe.corpus?.count ?? 0, ...(recipe.corpus?.wrongFraction !== undefined ? { wrongFraction: recipe.corpus.wrongFraction } : {}) })

const jsonLines = (entries: ReadonlyArray<Metrics.Entry>) => entries.map((e) => JSON.stringify({ step: e.step, ...e.values }) + "\n").join("")

/** Keys whose `--set` value is a path: it resolves from the working directory (a recipe file's own values from the file's). */
const pathKeys = ["model.from", "tokenizer.dir"]

/** `--set` overrides with the path keys' relative values made absolute from the working directory. */
const absolutePaths = (overrides: ReadonlyArray<string>): Array<string> =>
  overrides.map((o) => {
    const eq = o.indexOf("="), key = o.slice(0, eq), value = o.slice(eq + 1)
    return eq > 0 && pathKeys.includes(key) && value !== "" && !isAbsolute(value) ? `${key}=${resolve(value)}` : o
  })

/**
 * What the recipe's `model` section needs beyond its schema: a fresh model's shape complete, not both
 * `from` and `checkpoint`. Returns the fresh model's shape, or null when the model comes from a directory.
 */
const checkModelSection = (recipe: Recipe.Recipe, source: string): Effect.Effect<Recipe.Model | null, CoreConfig.ConfigError> => {
  const lora = Recipe.loraProblems(recipe)
  if (lora.length > 0) return Effect.fail(new CoreConfig.ConfigError({ source, problems: lora }))
  const shape = Recipe.shapeOf(recipe.model)
  const fromDir = recipe.model.from !== undefined || recipe.model.checkpoint !== undefined
  if (Array.isArray(shape)) return fromDir && !(recipe.model.from !== undefined && recipe.model.checkpoint !== undefined) ? Effect.succeed(null) : Effect.fail(new CoreConfig.ConfigError({ source, problems: shape }))
  return Effect.succeed(fromDir ? null : shape)
}

const trainableCount = (m: Transformer.Model) => Transformer.trainableWeights(m).reduce((n, w) => n + w.variable.size, 0)

/** The log's note of a LoRA policy's trained share. */
const loraLine = (m: Transformer.Model): string =>
  m.lora === undefined ? "" : `; LoRA r ${m.lora.rank}, α ${m.lora.alpha} on ${m.lora.targets.join(", ")}: ${trainableCount(m).toLocaleString("en-US")} trained`

/**
 * The policy: a Hugging Face directory's model, an r1flow checkpoint's, or a fresh one of the recipe's
 * shape; with `model.lora`, that model frozen under adapters drawn from the run's seed.
 */
const makePolicy = (recipe: Recipe.Recipe, from: string | undefined, shape: Recipe.Model | null, tokenizer: Codec, rng: Rng.Rng["Service"]) =>
  Effect.gen(function*() {
    const loaded = from !== undefined
      ? yield* Checkpoint.loadHf(from, recipe.model.maxSeqLen !== undefined ? { maxSeqLen: recipe.model.maxSeqLen } : {}).pipe(Effect.mapError(ModelSource.fromCheckpoint))
      : null
    const policy = loaded !== null
      ? loaded.model
      : shape === null
      ? yield* Checkpoint.load(recipe.model.checkpoint!)
      : Transformer.init(Recipe.modelConfig(shape, tokenizer.vocabSize), rng.stream("model/init"))
    const lora = recipe.model.lora
    return { policy: lora === undefined ? policy : Lora.attach(policy, lora, rng.stream("model/lora")), loaded }
  })

/** The manifest's tokenizer entry (its engine and why, for a Hugging Face one) and where the model came from. */
const modelRecord = (
  tokenizer: Codec,
  hf: HfTokenizer.HfCodec | null,
  dirs: { readonly from?: string | undefined; readonly tokenizer?: string | undefined },
  loaded: { readonly origin: Checkpoint.Origin } | null
) => ({
  tokenizer: { name: tokenizer.name, vocabSize: tokenizer.vocabSize, ...(hf !== null ? { engine: hf.engine, reason: hf.reason, dir: dirs.tokenizer } : {}) },
  ...(loaded !== null ? { model: { from: dirs.from!, family: loaded.origin.family, dtype: loaded.origin.dtype } satisfies ModelSource.Recorded } : {})
})

/** Runs `path` to the end in a new run directory. */
export const run = (path: string, options: Options = {}) =>
  Effect.gen(function*() {
    const t0 = performance.now()
    // Absolute, so plugin paths resolve from the recipe's directory however the working directory
    // changes, and `resume` finds it from anywhere (the manifest records it).
    const recipePath = resolve(path)
    const log = options.log ?? ((line: string) => console.log(line))
    const overrides = absolutePaths(options.overrides ?? [])
    const { recipe, resolved } = yield* load(recipePath, overrides)
    const source = overrides.length > 0 ? `${recipePath} with --set ${overrides.join(" ")}` : recipePath
    const shape = yield* checkModelSection(recipe, source)
    const stages = yield* prepare(recipe, recipePath, 0)
    // A model directory's config.json and every shard header (no weights yet), the recipe's model keys against it.
    const dirs = yield* ModelSource.dirs(recipe, dirname(recipePath), source)
    const inspected = dirs.from !== undefined
      ? yield* ModelSource.inspect(recipe, dirs.from)
      : recipe.model.checkpoint !== undefined
      ? yield* ModelSource.inspectCheckpoint(recipe.model.checkpoint)
      : null
    const data = yield* buildData(recipe)
    log(`data: ${data.train.length} train / ${data.test.length} held-out problems, ${data.corpus.length} corpus solutions`)
    const { codec: tokenizer, vocab, readFrom } = yield* Effect.acquireRelease(buildTokenizer(recipe, data, dirs.tokenizer), (t) => Effect.sync(() => t.codec.free()))
    const hf = "engine" in tokenizer ? (tokenizer as HfTokenizer.HfCodec) : null
    if (hf !== null) log(`tokenizer: ${dirs.tokenizer} on ${hf.engine} (${hf.reason})`)
    if (readFrom !== undefined) log(`tokenizer: the compact vocabulary of ${dirname(readFrom)}, the checkpoint's run`)
    yield* ModelSource.checkTemplate(recipe, tokenizer, dirs.tokenizer)
    if (inspected !== null) yield* ModelSource.checkVocab(dirs.from ?? recipe.model.checkpoint!, inspected, tokenizer, dirs.tokenizer)
    // The backend goes by the run's size, known only now (config.json, or the recipe's shape with the
    // tokenizer's vocabulary), and still before the policy's first tensor.
    const backend = yield* initBackend(recipe, bytesNeeded(recipe, inspected?.config ?? Recipe.modelConfig(shape!, tokenizer.vocabSize)))
    log(`backend: ${backend.name} (${backend.reason})`)
    const rng = Rng.makeService(recipe.seed)
    const { policy, loaded } = yield* makePolicy(recipe, dirs.from, shape, tokenizer, rng)
    const came = loaded === null ? "" : ` from ${dirs.from} (${loaded.origin.family}, ${loaded.origin.dtype}, context ${policy.config.maxSeqLen})`
    log(`policy: ${Transformer.parameterCount(policy).toLocaleString("en-US")} parameters${came}, vocabulary ${tokenizer.vocabSize} (${tokenizer.name})${loraLine(policy)}`)
    // The last of the checks that can refuse the run: only once they pass does it get a directory.
    const promptIds = (q: string) => Template.prompt(tokenizer, recipe.template ?? "r1-zero", q)
    yield* Data.checkFits(data, { recipe, tokenizer, policy, promptIds }).pipe(Effect.tapError(() => Effect.sync(() => policy.dispose())))
    const dir = yield* RunDir.create(recipe.runsDir ?? "runs", recipe.name)
    yield* RunLock.acquire(dir, "run")
    log(`run directory: ${dir.root}`)
    if (vocab !== null) yield* Compact.save(join(dir.root, "tokenizer"), vocab)
    // Copies of what came from outside, so that resume and export work when those directories move.
    if (dirs.tokenizer !== undefined) yield* ModelSource.keepTokenizer(dirs.tokenizer, dir.root)
    if (loaded !== null) yield* ModelSource.keepOrigin(loaded.origin, dir.root)
    // A LoRA run's checkpoints hold only the adapters: the base they sit on is recorded (and kept, if made here).
    if (policy.lora !== undefined) yield* LoraBase.start(dir.root, policy, dirs.from ?? recipe.model.checkpoint, recipe.model.maxSeqLen).pipe(Effect.mapError(ModelSource.fromCheckpoint))
    const manifest = {
      name: recipe.name,
      seed: recipe.seed,
      recipe: resolved,
      recipeFile: recipePath,
      overrides,
      backend,
      compute: Compute.of(backend),
      ...modelRecord(tokenizer, hf, dirs, loaded),
      parameters: Transformer.parameterCount(policy),
      ...(policy.lora !== undefined ? { lora: { rank: policy.lora.rank, alpha: policy.lora.alpha, targets: policy.lora.targets, trainable: trainableCount(policy) } } : {}),
      started: new Date().toISOString(),
      ...RunDir.environment(RunDir.versionsOf(["@r1flow/core", "@r1flow/engine", "effect", "apache-arrow", "@tensorflow/tfjs", "@tensorflow/tfjs-backend-wasm", "@dqbd/tiktoken"], require))
    }
    yield* RunDir.write(dir.manifest, JSON.stringify(manifest, null, 2))
    const session = yield* makeContext({ recipe, recipePath, resolved, dir, data, tokenizer, rng, policy, progress: { step: 0, stageIndex: 0, stageStep: 0, cursor: 0 }, metrics: [], log, sinks: yield* trainerSinks(dir), compute: Compute.of(backend) })
    return yield* execute(session, stages, manifest, t0)
  }).pipe(Effect.scoped)

/**
 * Refuses to continue `restored` on other maths (backend, kernels, GEMM) than it was made on, unless
 * `allow`, then warns. Returns this process's maths. Checkpoints from before the maths were recorded
 * are compared by the manifest's backend name only, with a warning.
 */
const checkCompute = (checkpoint: string, restored: RunCheckpoint.Restored, manifest: Record<string, unknown>, backend: Backend.Info, allow: boolean, log: (line: string) => void) =>
  Effect.gen(function*() {
    const now = Compute.of(backend)
    const was = restored.state.compute
    if (was === undefined) {
      const recorded = (manifest.backend as Backend.Info | undefined)?.name
      if (recorded !== undefined && recorded !== backend.name) log(`warning: the run started on ${recorded} and resumes on ${backend.name}; results will not be bitwise identical`)
      return now
    }
    const changes = Compute.differences(was, now)
    if (changes.length === 0) return now
    if (!allow) return yield* new Compute.BackendChangeError({ path: checkpoint, was: Compute.describe(was), now: Compute.describe(now), changes })
    log(`WARNING: ${checkpoint} was made on ${Compute.describe(was)} and the run continues on ${Compute.describe(now)} (${changes.join("; ")}), as --allow-backend-change asked: from here on it will not be bitwise identical to a run that never stopped`)
    return now
  })

/** A notice when the recipe file no longer matches the config the run started with (file + its --set overrides), naming the keys. */
const recipeDrift = (manifest: Record<string, unknown>) =>
  Effect.gen(function*() {
    if (typeof manifest.recipeFile !== "string") return null
    const file = manifest.recipeFile
    const rest = "the run continues with the config it started with, recorded in manifest.json (start a new run to use the edits)"
    if (!existsSync(file)) return `notice: the recipe file ${file} is gone; ${rest}`
    const overrides = Array.isArray(manifest.overrides) ? manifest.overrides.map(String) : []
    const now = yield* Effect.result(Effect.flatMap(CoreConfig.readJson(file), (raw) => CoreConfig.applyOverrides(raw, overrides)))
    if (now._tag === "Failure") return `notice: the recipe file ${file} no longer reads (${now.failure.message}); ${rest}`
    const keys = Recipe.changedKeys(manifest.recipe, now.success)
    return keys.length === 0 ? null : `notice: ${file} has changed since this run started (${keys.join(", ")}); ${rest}`
  })

/**
 * A run whose every stage is done and whose summary is written: what `resume` returns for it, reading
 * only. Its checkpoint must verify (checksums, config): one that does not goes the normal way, which names the fault.
 */
const finishedRun = (dir: RunDir.RunDir, recipe: Recipe.Recipe, manifest: Record<string, unknown>) =>
  Effect.gen(function*() {
    const summaryPath = join(dir.root, "summary.json")
    if (!existsSync(summaryPath)) return null
    const found = yield* Effect.result(RunCheckpoint.latest(dir.checkpoints))
    if (found._tag === "Failure") return null
    const checked = yield* Effect.result(RunCheckpoint.inspect(found.success.dir, { recipeHash: RunCheckpoint.hashConfig(manifest.recipe) }))
    if (checked._tag === "Failure" || checked.success.state.progress.stageIndex < recipe.stages.length) return null
    const summary = (yield* RunDir.readJson(summaryPath)) as { readonly seconds?: number }
    const result: Result = { dir, recipe, backend: manifest.backend as Backend.Info, evals: readEvals(dir), seconds: summary.seconds ?? 0 }
    return { checkpoint: basename(found.success.dir), result }
  })

/** Frees what a restored checkpoint holds (policy, reference), for a resume refused after reading it. */
const disposeRestored = (restored: RunCheckpoint.Restored) =>
  Effect.sync(() => {
    restored.policy.dispose()
    restored.reference?.dispose()
  })

/**
 * The checkpoint to resume from, verified and read, and `perf.jsonl`'s entries. Damage inside the metrics
 * files (not a torn tail) is refused first, before the cut-back (`cutBack`) rewrites them.
 */
const readCheckpoint = (dir: RunDir.RunDir, manifest: Record<string, unknown>, log: (line: string) => void) =>
  Effect.gen(function*() {
    yield* RunDir.readMetrics(dir.metrics)
    const perf = yield* RunDir.readMetrics(join(dir.root, "perf.jsonl"))
    const found = yield* RunCheckpoint.latest(dir.checkpoints)
    if (found.notice !== null) log(`notice: ${found.notice}`)
    const restored = yield* RunCheckpoint.load(found.dir, { recipeHash: RunCheckpoint.hashConfig(manifest.recipe) })
    return { checkpoint: found.dir, restored, perf: perf.entries }
  })

/** Refuses a checkpoint whose policy is not of the recipe's shape, unless a `student` stage or a starting checkpoint set the shape. */
const checkShape = (recipe: Recipe.Recipe, restored: RunCheckpoint.Restored, vocabSize: number, checkpoint: string) =>
  Effect.gen(function*() {
    const studentBefore = recipe.stages.slice(0, restored.state.progress.stageIndex + 1).some((s) => s.stage === "student")
    const shape = Recipe.shapeOf(recipe.model)
    if (studentBefore || Array.isArray(shape) || recipe.model.checkpoint !== undefined || recipe.model.from !== undefined) return
    const expected = Recipe.modelConfig(shape, vocabSize)
    const got = restored.policy.config
    if ((Object.keys(expected) as Array<keyof typeof expected>).every((k) => expected[k] === got[k])) return
    yield* disposeRestored(restored)
    return yield* new RunCheckpoint.CheckpointError({ path: checkpoint, reason: `the checkpoint's model shape ${JSON.stringify(got)} differs from the recipe's ${JSON.stringify(expected)}` })
  })

/**
 * Metrics after the checkpoint came from the stopped run; the resumed run writes them again. perf.jsonl is
 * not in the checkpoint: its lines up to the checkpoint's step are (each step's are written before its
 * checkpoint). Stale `latest` temp files of dead writers go too.
 */
const cutBack = (dir: RunDir.RunDir, restored: RunCheckpoint.Restored, perf: ReadonlyArray<Metrics.Entry>) =>
  Effect.gen(function*() {
    yield* RunDir.write(dir.metrics, jsonLines(restored.state.metrics))
    yield* RunDir.write(join(dir.root, "perf.jsonl"), jsonLines(perf.filter((e) => e.step <= restored.state.progress.step)))
    yield* Effect.try({ try: () => RunCheckpoint.removeStaleLatest(dir.checkpoints), catch: (e) => new RunDir.RunDirError({ path: dir.checkpoints, message: (e as Error).message }) })
  })

/** What the stage the run resumes inside gets of its trainer; none for a checkpoint taken between stages. */
const resumeState = (restored: RunCheckpoint.Restored): Resumed =>
  restored.trainer !== null || restored.reference !== null ? Option.some({ trainer: restored.trainer, reference: restored.reference }) : Option.none()

/** The line that says where the run resumes. */
const resumingLine = (dir: RunDir.RunDir, recipe: Recipe.Recipe, restored: RunCheckpoint.Restored) => {
  const { stageIndex, step } = restored.state.progress
  const at = stageIndex < recipe.stages.length ? `stage ${stageIndex + 1}/${recipe.stages.length}` : `all ${recipe.stages.length} stages done; writing the summary and report`
  return `resuming ${dir.root} from ${restored.name} (global step ${step}, ${at})`
}

/**
 * Continues the run in `root` from its latest checkpoint. The checkpoint is verified and read before
 * anything of the run is changed, and refused when made on other maths than this process's (see
 * `ResumeOptions.allowBackendChange`); metrics written after it (by the run that stopped) are cut back to it.
 * The run continues with the config recorded in its manifest: edits to the recipe file since it started
 * are named in a notice and not applied. A finished run is reported as such and left untouched. The stage
 * it resumes inside is handed its trainer's saved state (`RecipeStage.run`'s `resume`).
 */
export const resume = (root: string, options: ResumeOptions = {}) =>
  Effect.gen(function*() {
    const t0 = performance.now()
    const log = options.log ?? ((line: string) => console.log(line))
    const dir = RunDir.at(resolve(root))
    const manifest = (yield* RunDir.readJson(dir.manifest)) as Record<string, unknown>
    const recipePath = String(manifest.recipeFile ?? dir.manifest)
    const recipe = yield* CoreConfig.decode(Recipe.Recipe, manifest.recipe, { source: `${dir.manifest} (recipe)` })
    const done = yield* finishedRun(dir, recipe, manifest)
    if (done !== null) {
      log(`${dir.root} is finished: all ${recipe.stages.length} stages done (checkpoint ${done.checkpoint}, summary.json written); nothing to resume, nothing changed`)
      return done.result
    }
    // Everything from here on reads state a live writer could be changing: one writer at a time.
    const stale = yield* RunLock.acquire(dir, "resume")
    if (stale !== null) log(RunLock.tookOver(stale))
    const drift = yield* recipeDrift(manifest)
    if (drift !== null) log(drift)
    const { checkpoint, restored, perf } = yield* readCheckpoint(dir, manifest, log)
    const stages = yield* prepare(recipe, recipePath, restored.state.progress.stageIndex).pipe(Effect.tapError(() => disposeRestored(restored)))
    const backend = yield* initBackend(recipe, recordedBytes(manifest))
    const compute = yield* checkCompute(checkpoint, restored, manifest, backend, options.allowBackendChange === true, log).pipe(Effect.tapError(() => disposeRestored(restored)))
    log(resumingLine(dir, recipe, restored))
    const data = yield* buildData(recipe)
    const tokenizer: Codec = yield* Effect.acquireRelease(loadTokenizer(recipe, dir), (t) => Effect.sync(() => t.free()))
    yield* checkShape(recipe, restored, tokenizer.vocabSize, checkpoint)
    const rng = Rng.makeService(recipe.seed)
    yield* rng.restore(restored.state.rng)
    yield* cutBack(dir, restored, perf)
    const session = yield* makeContext({ recipe, recipePath, resolved: manifest.recipe, dir, data, tokenizer, rng, policy: restored.policy, progress: { ...restored.state.progress }, metrics: restored.state.metrics, log, sinks: yield* trainerSinks(dir), compute })
    yield* Data.checkFits(data, session.ctx)
    return yield* execute(session, stages, manifest, t0, resumeState(restored))
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
    const { entries } = yield* RunDir.readMetrics(dir.metrics)
    yield* RunDir.write(dir.report, Report.render({ title: `r1flow run ${String(manifest.name ?? root)}`, manifest, metrics: entries, evals: readEvals(dir) }))
    return dir.report
  })


/** A standalone evaluation's record, under `evals/standalone/` with the time in its name (never the trainer's files). */
const saveStandalone: Evaluate.Save = (ctx, record) =>
  Effect.try({
    try: () => {
      const folder = join(ctx.dir.evals, "standalone")
      mkdirSync(folder, { recursive: true })
      return RunDir.writeNew(join(folder, `${record.name}-${RunDir.stamp(new Date())}`), ".json", JSON.stringify(record, null, 2))
    },
    catch: (e) => new RunDir.RunDirError({ path: join(ctx.dir.evals, "standalone"), message: (e as Error).message })
  })

/** Options of a standalone evaluation. */
export interface EvaluateOptions {
  /** `held-out` (the run's own held-out split) or a JSONL file of `{ question, answer }` rows (GSM8K answers ending in `#### N`, or plain answers). */
  readonly data: string
  readonly samples: number
  readonly temperature: number
  /** Nucleus sampling's p (R1's evaluation: temperature 0.6, top-p 0.95); unset samples the whole distribution. */
  readonly topP?: number
  readonly limit?: number
  readonly maxNewTokens?: number
  readonly log?: (line: string) => void
}

/**
 * A run folder, or one of its checkpoints (`…/checkpoints/step-N`), as `evaluate` and `export` take it: the
 * run's folder, manifest and recipe, and the checkpoint to read (given, or the run's newest valid one, with
 * a notice when a newer one was damaged), looked up only when asked so that cheaper checks can go first.
 */
export const openTarget = (target: string, log: (line: string) => void) =>
  Effect.gen(function*() {
    const abs = resolve(target)
    const isCheckpoint = existsSync(join(abs, "state.json"))
    const dir = RunDir.at(isCheckpoint ? resolve(abs, "..", "..") : abs)
    const manifest = (yield* RunDir.readJson(dir.manifest)) as Record<string, unknown>
    const recipe = yield* CoreConfig.decode(Recipe.Recipe, manifest.recipe, { source: `${dir.manifest} (recipe)` })
    const checkpoint = isCheckpoint
      ? Effect.succeed(abs)
      : Effect.map(RunCheckpoint.latest(dir.checkpoints), (found) => {
        if (found.notice !== null) log(`notice: ${found.notice}`)
        return found.dir
      })
    return { dir, manifest, recipe, checkpoint }
  })

/**
 * Evaluates a run's latest policy (or a checkpoint folder `…/checkpoints/step-N`) on held-out data.
 * It takes no lock and writes none of the trainer's files (so it is safe while the run trains): the
 * result goes to `evals/standalone/<label>-<timestamp>.json`, a name no other evaluation has.
 */
export const evaluate = (target: string, options: EvaluateOptions) =>
  Effect.gen(function*() {
    const log = options.log ?? ((line: string) => console.log(line))
    if (options.topP !== undefined && !(options.topP > 0 && options.topP <= 1)) {
      return yield* new StageRunError({ stage: "eval", message: `top-p ${options.topP}: must be in (0, 1] (the probability mass to sample from)` })
    }
    const { dir, manifest, recipe, checkpoint: latest } = yield* openTarget(target, log)
    // The problems first: a bad or empty file is reported before a checkpoint is loaded.
    const test = options.data === "held-out"
      ? (yield* Data.build(recipe.task, recipe.seed, { corpusSize: 0 })).test
      : (yield* Loaders.questionAnswer(options.data, { onError: "fail" })).rows
    if (test.length === 0) {
      const file = options.data !== "held-out" ? options.data : recipe.task.kind !== "mixture" && typeof recipe.task.test === "string" ? recipe.task.test : `the ${recipe.task.kind} held-out split`
      return yield* new Loaders.DataFileError({ file, message: `${file}: no problems to evaluate` })
    }
    const checkpoint = yield* latest
    const restored = yield* RunCheckpoint.load(checkpoint, { recipeHash: RunCheckpoint.hashConfig(manifest.recipe) })
    restored.reference?.dispose()
    const backend = yield* initBackend(recipe, recordedBytes(manifest))
    const tokenizer: Codec = yield* Effect.acquireRelease(loadTokenizer(recipe, dir), (t) => Effect.sync(() => t.free()))
    const session = yield* makeContext({
      recipe,
      recipePath: String(manifest.recipeFile ?? dir.manifest),
      resolved: manifest.recipe,
      dir,
      data: { train: [], test, corpus: [] },
      tokenizer,
      rng: Rng.makeService(recipe.seed),
      policy: restored.policy,
      progress: { ...restored.state.progress },
      metrics: [],
      log,
      sinks: null,
      compute: Compute.of(backend)
    })
    const label = `cli-${options.data === "held-out" ? "held-out" : basename(options.data).replace(/[^A-Za-z0-9._-]/g, "_")}-${restored.name}`
    return yield* Evaluate.run(
      {
        split: "test",
        samples: options.samples,
        batchSize: 64,
        sampling: {
          maxNewTokens: options.maxNewTokens ?? Math.max(1, restored.policy.config.maxSeqLen - 100),
          temperature: options.temperature,
          ...(options.topP !== undefined ? { topP: options.topP } : {})
        },
        ...(options.limit !== undefined ? { limit: options.limit } : {})
      },
      label,
      saveStandalone
    ).pipe(Effect.provide(session.services))
  }).pipe(Effect.scoped)

/**
 * The run's size as `run` estimates it (`bytesNeeded`), from the recipe alone: the policy's config from
 * `model.from`'s config.json (`from`, resolved) or `model.checkpoint`'s, no weight read, else the recipe's shape
 * with the tokenizer's `vocabSize`. Undefined for a `model` section `run` refuses.
 */
export const sizeOf = (recipe: Recipe.Recipe, from: string | undefined, vocabSize: number) =>
  Effect.gen(function*() {
    const shape = Recipe.shapeOf(recipe.model)
    const config = from !== undefined
      ? (yield* ModelSource.inspect(recipe, from)).config
      : recipe.model.checkpoint !== undefined
      ? (yield* ModelSource.inspectCheckpoint(recipe.model.checkpoint)).config
      : Array.isArray(shape) ? undefined : Recipe.modelConfig(shape, vocabSize)
    return config === undefined ? undefined : bytesNeeded(recipe, config)
  })

/**
 * What a rollout worker (`RolloutWorker`) builds of a recipe (the file at `recipePath`, whose folder relative
 * model and tokenizer paths resolve from), exactly as `run` builds it: the task data, the tokenizer (freed
 * with the scope) and the backend, chosen by the trainer's own estimate of the run's size (`sizeOf`) so that
 * the maths, in the draw's fingerprint, are the trainer's. The policy is not here: a worker takes the
 * trainer's model config and weights over NATS.
 */
export const workerInputs = (recipe: Recipe.Recipe, recipePath: string) =>
  Effect.gen(function*() {
    const dirs = yield* ModelSource.dirs(recipe, dirname(recipePath), recipePath)
    const data = yield* buildData(recipe)
    const { codec } = yield* Effect.acquireRelease(buildTokenizer(recipe, data, dirs.tokenizer), (t) => Effect.sync(() => t.codec.free()))
    const backend = yield* initBackend(recipe, yield* sizeOf(recipe, dirs.from, codec.vocabSize))
    return { backend, data, tokenizer: codec }
  })
