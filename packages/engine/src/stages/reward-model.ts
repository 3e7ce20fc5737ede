/**
 * `reward-model`: trains a Bradley–Terry reward model on preference pairs and leaves it to later stages as
 * a reward, `{ "plugin": "@r1flow/reward-model", "config": { "stage": "<label>" } }` (`resolveRewardEntries`).
 *
 *   L = −mean log σ(r(x, y_c) − r(x, y_r))        r: the policy transformer with a scalar head (`RewardModel`)
 *
 * Pairs come from a file (`source.kind: "file"`: `Pairs`' JSONL / Parquet `prompt, chosen, rejected`, the
 * prompt templated like a rollout's, each completion ended with the end-of-text token as a stopped rollout's
 * is) or from the saved rollouts of an earlier grpo stage of this run (`source.kind: "rollouts"`). There,
 * within a prompt group g and for each criterion `{ reward, threshold }` of `by`:
 *
 *   C_g = { i ∈ g : reward_<reward>[i] ≥ threshold }     R_g = { i ∈ g : reward_<reward>[i] < threshold }
 *
 * (a NaN score is in neither), both shuffled from the run seed and zipped: min(|C_g|, |R_g|) pairs, each
 * completion in at most one pair per criterion (correct vs incorrect; readable vs mixed-language). All
 * pairs are capped at `maxPairs` (a seeded shuffle), then split by prompt: a `heldOut` share of the distinct
 * prompts (at least one when there are two) holds the held-out pairs, so no prompt is on both sides; a
 * file source with `test` takes that file as held out instead.
 *
 * The model starts from the current policy's weights (LoRA merged in), as InstructGPT and DeepSeek start
 * their reward models from the SFT model, or fresh by the policy's shape (`init: "fresh"`); the head starts
 * at zero, every margin at 0. `steps` Adam steps on `batchSize` pairs drawn in seeded epochs; each step
 * advances the run's global step. It writes the checkpoint to `<run>/reward-models/<label>/`
 * (`RewardModel.save`) and every pair with its split to `<run>/reward-models/<label>.pairs.arrow`. No
 * checkpoint is taken inside the stage: a run stopped inside it trains it again from the start (the same
 * pairs and seed, the same model); one resumed after it never runs it again and finds the checkpoint at
 * the same path.
 */
import { Batch, Columns, Config as CoreConfig, Metrics, Plugin, type RewardStage, Rng } from "@r1flow/core"
import { Lora, Transformer } from "@r1flow/model"
import { Pairs, RewardModel, Train } from "@r1flow/reward-model"
import { Field, Schema as ArrowSchema, tableFromIPC, Utf8, type Float32, type RecordBatch, type Table, type Vector, type Utf8 as Utf8T } from "apache-arrow"
import { Effect, Schema } from "effect"
import { existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs"
import { join, resolve } from "node:path"
import { readParquet } from "parquet-wasm"
import { Run, StageRunError, type RunContext } from "../Context.js"
import * as Progress from "../Progress.js"
import * as Prompts from "../Prompts.js"
import * as Recipe from "../Recipe.js"
import * as RecipeStage from "../RecipeStage.js"
import * as RunDir from "../RunDir.js"

/** One criterion of a rollouts source: chosen scores `reward_<reward>` ≥ `threshold` (default 1), rejected below it. */
export const Criterion = Schema.Struct({
  reward: Schema.String,
  threshold: Schema.Finite.pipe(Schema.withDecodingDefaultKey(Effect.succeed(1)))
})

/** Reward-model stage config. */
export const Config = Schema.Struct({
  source: Schema.Union([
    /** Pairs files; relative paths resolve from the recipe's folder. */
    Schema.Struct({ kind: Schema.Literal("file"), train: Schema.String, test: Schema.optionalKey(Schema.String) }),
    /** Pairs from the saved rollouts of the earlier grpo stage labelled `stage`. */
    Schema.Struct({ kind: Schema.Literal("rollouts"), stage: Schema.String, by: Schema.Array(Criterion).check(Schema.isMinLength(1)) })
  ]),
  /** At most this many pairs (a seeded choice), before the held-out split. */
  maxPairs: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThan(0))),
  /** Share of the distinct prompts held out (default 0.1); unused with a file source's `test`. */
  heldOut: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0), Schema.isLessThan(1)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(0.1))),
  steps: Schema.Int.check(Schema.isGreaterThan(0)),
  batchSize: Schema.Int.check(Schema.isGreaterThan(0)),
  learningRate: Schema.Finite.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(1e-5))),
  /** `policy` (default): the current policy's weights; `fresh`: a new transformer of the policy's shape. */
  init: Schema.Literals(["policy", "fresh"]).pipe(Schema.withDecodingDefaultKey(Effect.succeed("policy" as const))),
  logEvery: Schema.Int.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(25)))
})
/** Reward-model stage config. */
export type Config = typeof Config.Type

/** The reward plugin this stage's checkpoint is for. */
export const REWARD_PLUGIN = "@r1flow/reward-model"

/** Where a reward-model stage labelled `label` writes its checkpoint. */
export const checkpointOf = (root: string, label: string) => join(root, "reward-models", label)

/** Where a reward-model stage labelled `label` writes its pairs. */
export const pairsPathOf = (root: string, label: string) => join(root, "reward-models", `${label}.pairs.arrow`)

/** The pairs file: tokenized pairs plus the criterion that made each (`file` for a file source) and its split. */
export const PairsSet = new ArrowSchema(
  [...Pairs.Tokenized.fields, new Field("by", new Utf8(), false), new Field("split", new Utf8(), false)],
  new Map([["r1flow.schema", "reward-model-pairs"], ["r1flow.schema_version", Batch.SCHEMA_VERSION]])
)

/** A tokenized pair with its texts and the criterion that made it. */
interface Built extends RewardModel.Pair {
  readonly text: { readonly prompt: string; readonly chosen: string; readonly rejected: string }
  readonly by: string
}

type StageEntry = typeof Recipe.StageEntry.Type

const labelOf = (s: StageEntry) => s.name ?? s.stage
const specOf = (s: StageEntry) => Recipe.builtinStages[s.stage] ?? s.stage
const isKind = (s: StageEntry, kind: string) => specOf(s) === Recipe.builtinStages[kind]
const rawConfig = (s: StageEntry): Record<string, unknown> => (typeof s.config === "object" && s.config !== null ? s.config as Record<string, unknown> : {})
const savesRollouts = (s: StageEntry) => rawConfig(s).saveRollouts !== false

// ---------------------------------------------------------------------------------------------
// Handing the model on

/** The `stage` a `@r1flow/reward-model` entry names, if it names one. */
const stageRef = (entry: { readonly plugin?: unknown; readonly config?: unknown }): string | undefined => {
  const c = entry.config
  return entry.plugin === REWARD_PLUGIN && typeof c === "object" && c !== null && typeof (c as { stage?: unknown }).stage === "string" ? (c as { stage: string }).stage : undefined
}

/** Why `ref` does not name a reward-model stage before stage `index` of `stages`, or null when it does. */
const refProblem = (stages: ReadonlyArray<StageEntry>, index: number, ref: string): string | null => {
  const at = stages.findIndex((s) => labelOf(s) === ref && isKind(s, "reward-model"))
  if (at === -1) return `names "${ref}", but no reward-model stage is labelled so (reward-model stages: ${stages.filter((s) => isKind(s, "reward-model")).map(labelOf).join(", ") || "none"})`
  return at < index ? null : `names the reward-model stage "${ref}" (stages[${at}]), which does not run before this stage (stages[${index}])`
}

/**
 * A stage's reward entries with each `@r1flow/reward-model` entry's `config.stage` rewritten to that stage's
 * checkpoint (`config.checkpoint = <run>/reward-models/<stage>`); fails, naming why, when `stage` is not a
 * reward-model stage before the running one or its checkpoint is not there. Other entries are returned as given.
 */
export const resolveRewardEntries = (ctx: RunContext, entries: ReadonlyArray<RewardStage.Entry>): Effect.Effect<Array<RewardStage.Entry>, StageRunError> =>
  Effect.forEach(entries, (entry, i) =>
    Effect.gen(function*() {
      const ref = stageRef(entry)
      if (ref === undefined) return entry
      const index = ctx.progress.stageIndex
      const here = ctx.recipe.stages[index] === undefined ? `stage ${index}` : labelOf(ctx.recipe.stages[index])
      const problem = refProblem(ctx.recipe.stages, index, ref)
      if (problem !== null) return yield* new StageRunError({ stage: here, message: `rewards[${i}].config.stage ${problem}` })
      const checkpoint = checkpointOf(ctx.dir.root, ref)
      if (!existsSync(join(checkpoint, RewardModel.HEAD_FILE))) {
        return yield* new StageRunError({ stage: here, message: `rewards[${i}].config.stage "${ref}": no reward model at ${checkpoint} (did the stage finish?)` })
      }
      const { stage: _stage, ...rest } = entry.config as Record<string, unknown>
      return { ...entry, config: { ...rest, checkpoint } }
    }))

// ---------------------------------------------------------------------------------------------
// Up-front checks

const configError = (problems: Array<string>) => new CoreConfig.ConfigError({ source: "recipe", problems })

/**
 * Before the run, for a stage that scores with rewards: each `@r1flow/reward-model` entry naming a
 * `config.stage` (entry k at `pathOf(k)`) names a reward-model stage that runs before it. Called by the
 * stages that take reward entries, so it holds whether or not the recipe has a reward-model stage.
 */
export const checkStageRefs = (
  entries: ReadonlyArray<{ readonly plugin?: unknown; readonly config?: unknown } | undefined>,
  pathOf: (k: number) => string,
  at: RecipeStage.CheckContext
): Effect.Effect<void, CoreConfig.ConfigError> => {
  const { stages, index } = at
  if (stages === undefined || index === undefined) return Effect.void
  const problems = entries.flatMap((e, k) => {
    const ref = e === undefined ? undefined : stageRef(e)
    const problem = ref === undefined ? null : refProblem(stages, index, ref)
    return problem === null ? [] : [`${pathOf(k)}.config.stage ${problem}`]
  })
  return problems.length === 0 ? Effect.void : Effect.fail(configError(problems))
}

/** The reward names a grpo stage's raw config writes (`reward_<name>` columns): each entry's `name`, else its plugin's. */
const grpoRewardNames = (s: StageEntry, from: string) =>
  Effect.forEach(Array.isArray(rawConfig(s).rewards) ? rawConfig(s).rewards as Array<{ plugin?: unknown; name?: unknown }> : [], (e) =>
    typeof e.name === "string" ? Effect.succeed(e.name) : Effect.map(Plugin.load(String(e.plugin), { kind: "reward", from }), (p) => p.name))

/** A rollouts source names an earlier grpo stage that saves its rollouts and writes each `by` reward. */
const checkRolloutsSource = (source: Extract<Config["source"], { kind: "rollouts" }>, at: RecipeStage.CheckContext, stages: ReadonlyArray<StageEntry>, index: number) =>
  Effect.gen(function*() {
    const where = `${at.where}.source.stage`
    const found = stages.findIndex((s) => labelOf(s) === source.stage)
    if (found === -1) return yield* configError([`${where}: no stage is labelled "${source.stage}" (stages: ${stages.map(labelOf).join(", ")})`])
    if (found >= index) return yield* configError([`${where}: "${source.stage}" (stages[${found}]) does not run before this stage (stages[${index}]); its rollouts would not exist yet`])
    const s = stages[found]
    if (!isKind(s, "grpo")) return yield* configError([`${where}: "${source.stage}" is a ${s.stage} stage; pairs are built from a grpo stage's rollouts`])
    if (!savesRollouts(s)) return yield* configError([`${where}: "${source.stage}" has saveRollouts false; it leaves no rollouts to build pairs from`])
    const names = yield* grpoRewardNames(s, at.from)
    const missing = source.by.map((c, i) => ({ c, i })).filter(({ c }) => !names.includes(c.reward))
    if (missing.length > 0) {
      return yield* configError(missing.map(({ c, i }) => `${at.where}.source.by[${i}].reward: "${c.reward}" is not a reward of "${source.stage}" (its rewards: ${names.join(", ")})`))
    }
  })

/** What the schema cannot see: the source's files or stage, and every reference to a reward-model stage in the recipe. */
const check = (config: Config, at: RecipeStage.CheckContext) =>
  Effect.gen(function*() {
    const source = config.source
    if (source.kind === "file") {
      const files = [["train", source.train], ...(source.test !== undefined ? [["test", source.test]] : [])] as const
      const absent = files.filter(([, f]) => !existsSync(resolve(at.from, f)))
      if (absent.length > 0) return yield* configError(absent.map(([k, f]) => `${at.where}.source.${k}: ${resolve(at.from, f)} does not exist`))
    }
    if (at.stages === undefined || at.index === undefined) return
    if (source.kind === "rollouts") yield* checkRolloutsSource(source, at, at.stages, at.index)
  })

// ---------------------------------------------------------------------------------------------
// Pairs

const stageError = (stage: string) => (e: { readonly message: string }) => new StageRunError({ stage, message: e.message, cause: e })

/** The saved rollouts of the grpo stage `source` (its block of `rollouts/step-*.parquet`, which only grpo stages write, in recipe order). */
const rolloutFiles = (ctx: RunContext, label: string, source: string): Effect.Effect<Array<string>, StageRunError> =>
  Effect.gen(function*() {
    const writers = ctx.recipe.stages.filter((s) => isKind(s, "grpo") && savesRollouts(s))
    const at = writers.findIndex((s) => labelOf(s) === source)
    if (at === -1) return yield* new StageRunError({ stage: label, message: `source.stage "${source}" is not a grpo stage that saves rollouts` })
    const stepsOf = (s: StageEntry) => Number(rawConfig(s).steps)
    const skip = writers.slice(0, at).reduce((n, s) => n + stepsOf(s), 0)
    const files = existsSync(ctx.dir.rollouts) ? readdirSync(ctx.dir.rollouts).filter((f) => /^step-\d+\.parquet$/.test(f)).sort() : []
    const mine = files.slice(skip, skip + stepsOf(writers[at]))
    if (mine.length < stepsOf(writers[at])) {
      return yield* new StageRunError({ stage: label, message: `${ctx.dir.rollouts} has ${files.length} rollout files; "${source}" should have written ${stepsOf(writers[at])} after the ${skip} of the grpo stages before it` })
    }
    return mine.map((f) => join(ctx.dir.rollouts, f))
  })

const readTable = (label: string, file: string): Effect.Effect<Table, StageRunError> =>
  Effect.try({
    try: () => tableFromIPC(readParquet(new Uint8Array(readFileSync(file))).intoIPCStream()),
    catch: (e) => new StageRunError({ stage: label, message: `cannot read the rollouts ${file}: ${(e as Error).message}` })
  })

/** Pairs of one rollouts batch: per group and criterion, C and R shuffled by `rng` and zipped. */
const batchPairs = (batch: RecordBatch, by: ReadonlyArray<typeof Criterion.Type>, rng: Rng.Stream, where: string): Array<Built> | string => {
  const texts = (n: string) => Array.from(batch.getChild(n) as Vector<Utf8T>, (s) => s ?? "")
  const prompt = texts("prompt"), completion = texts("completion")
  const groups = Columns.int32Values(batch.getChild("group_id") as any)
  const pIds = Columns.int32List(batch.getChild("prompt_ids") as any), cIds = Columns.int32List(batch.getChild("completion_ids") as any)
  const members = new Map<number, Array<number>>()
  groups.forEach((g, i) => { members.set(g, [...(members.get(g) ?? []), i]) })
  const out: Array<Built> = []
  for (const c of by) {
    const col = batch.getChild(Batch.rewardColumn(c.reward)) as Vector<Float32> | null
    if (col === null) return `${where} has no ${Batch.rewardColumn(c.reward)} column`
    const score = Columns.float32Values(col)
    for (const rows of members.values()) {
      const chosen = rng.shuffle(rows.filter((i) => score[i] >= c.threshold))
      const rejected = rng.shuffle(rows.filter((i) => score[i] < c.threshold))
      for (let k = 0; k < Math.min(chosen.length, rejected.length); k++) {
        const [y, n] = [chosen[k], rejected[k]]
        out.push({
          prompt: Columns.row(pIds, y).slice(), chosen: Columns.row(cIds, y).slice(), rejected: Columns.row(cIds, n).slice(),
          text: { prompt: prompt[y], chosen: completion[y], rejected: completion[n] },
          by: c.reward
        })
      }
    }
  }
  return out
}

/** Pairs from the saved rollouts of the grpo stage the source names. */
const fromRollouts = (ctx: RunContext, label: string, source: Extract<Config["source"], { kind: "rollouts" }>) =>
  Effect.gen(function*() {
    const rng = Rng.make(ctx.recipe.seed, `${label}/pairs`)
    const out: Array<Built> = []
    for (const file of yield* rolloutFiles(ctx, label, source.stage)) {
      for (const batch of (yield* readTable(label, file)).batches) {
        const got = batchPairs(batch, source.by, rng, file)
        if (typeof got === "string") return yield* new StageRunError({ stage: label, message: got })
        out.push(...got)
      }
    }
    if (out.length === 0) {
      const what = source.by.map((c) => `${c.reward} ≥ ${c.threshold}`).join(", nor ")
      return yield* new StageRunError({ stage: label, message: `no pair: no group of "${source.stage}"'s rollouts had both a completion with ${what} and one below it` })
    }
    return out
  })

/** A pairs file tokenized as the run's rollouts are: templated prompt, completion ⧺ end of text. */
const readPairsFile = (ctx: RunContext, label: string, file: string) =>
  Effect.gen(function*() {
    const path = resolve(ctx.recipeDir, file)
    const batch = yield* Pairs.read(path).pipe(Effect.mapError(stageError(label)))
    const eot = ctx.tokenizer.specialIds.eot
    const completion = (text: string) => {
      const ids = ctx.tokenizer.encode(text)
      const out = new Int32Array(ids.length + 1)
      out.set(ids)
      out[ids.length] = eot
      return out
    }
    const col = (n: string) => Array.from(batch.getChild(n) as Vector<Utf8T>, (s) => s ?? "")
    const [p, c, r] = [col("prompt"), col("chosen"), col("rejected")]
    return p.map((prompt, i): Built => ({
      prompt: ctx.promptIds(prompt), chosen: completion(c[i]), rejected: completion(r[i]),
      text: { prompt, chosen: c[i], rejected: r[i] }, by: "file"
    }))
  })

/** The train and held-out pairs, capped at `maxPairs`; held out by prompt (`heldOut` share) unless the file source gives `test`. */
const buildPairs = (ctx: RunContext, label: string, config: Config) =>
  Effect.gen(function*() {
    const source = config.source
    const all = source.kind === "file" ? yield* readPairsFile(ctx, label, source.train) : yield* fromRollouts(ctx, label, source)
    if (all.length === 0) return yield* new StageRunError({ stage: label, message: `no pair: ${source.kind === "file" ? source.train : "the rollouts"} holds none` })
    const capped = config.maxPairs !== undefined && all.length > config.maxPairs ? Rng.make(ctx.recipe.seed, `${label}/cap`).shuffle(all.slice()).slice(0, config.maxPairs) : all
    if (source.kind === "file" && source.test !== undefined) return { train: capped, heldout: yield* readPairsFile(ctx, label, source.test) }
    const prompts = [...new Set(capped.map((p) => p.text.prompt))]
    const held = prompts.length < 2 || config.heldOut === 0 ? 0 : Math.min(prompts.length - 1, Math.max(1, Math.round(config.heldOut * prompts.length)))
    const out = new Set(Rng.make(ctx.recipe.seed, `${label}/split`).shuffle(prompts).slice(0, held))
    return { train: capped.filter((p) => !out.has(p.text.prompt)), heldout: capped.filter((p) => out.has(p.text.prompt)) }
  })

/** The pairs as a `PairsSet` batch. */
const pairsBatch = (train: ReadonlyArray<Built>, heldout: ReadonlyArray<Built>): RecordBatch => {
  const all = [...train, ...heldout]
  return Batch.fromData(PairsSet, {
    prompt: Columns.makeUtf8(all.map((p) => p.text.prompt)),
    chosen: Columns.makeUtf8(all.map((p) => p.text.chosen)),
    rejected: Columns.makeUtf8(all.map((p) => p.text.rejected)),
    prompt_ids: Columns.int32ListFromRows(all.map((p) => p.prompt)),
    chosen_ids: Columns.int32ListFromRows(all.map((p) => p.chosen)),
    rejected_ids: Columns.int32ListFromRows(all.map((p) => p.rejected)),
    by: Columns.makeUtf8(all.map((p) => p.by)),
    split: Columns.makeUtf8(all.map((_, i) => (i < train.length ? "train" : "heldout")))
  })
}

// ---------------------------------------------------------------------------------------------
// Training

/** The reward model, freed with the scope: the policy's weights (LoRA merged in) or fresh, head zero. */
const acquireModel = (ctx: RunContext, label: string, init: Config["init"]) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const model = RewardModel.init(ctx.policy.config, Rng.make(ctx.recipe.seed, `${label}/init`))
      if (init === "fresh") return model
      const from = ctx.policy.lora === undefined ? ctx.policy : await Lora.merge(ctx.policy)
      Transformer.copyWeights(from, model.policy)
      if (from !== ctx.policy) from.dispose()
      return model
    }),
    (model) => Effect.sync(() => model.dispose())
  )

/** A tokenized pairs batch for the trainer stage. */
const trainBatch = (pairs: ReadonlyArray<Built>): RecordBatch =>
  Batch.fromData(Pairs.Tokenized, {
    prompt: Columns.makeUtf8(pairs.map((p) => p.text.prompt)),
    chosen: Columns.makeUtf8(pairs.map((p) => p.text.chosen)),
    rejected: Columns.makeUtf8(pairs.map((p) => p.text.rejected)),
    prompt_ids: Columns.int32ListFromRows(pairs.map((p) => p.prompt)),
    chosen_ids: Columns.int32ListFromRows(pairs.map((p) => p.chosen)),
    rejected_ids: Columns.int32ListFromRows(pairs.map((p) => p.rejected))
  })

/** `steps` Bradley–Terry steps on `train`, each recording its loss and the batch's pre-step accuracy at the next global step. */
const fit = (ctx: RunContext, label: string, config: Config, model: RewardModel.RewardModel, train: ReadonlyArray<Built>) =>
  Effect.gen(function*() {
    const metrics = yield* Metrics.Metrics
    const trainer = yield* Effect.acquireRelease(Effect.sync(() => Train.make(model, { learningRate: config.learningRate })), (t) => Effect.sync(() => t.dispose()))
    const draw = Prompts.sampler(train, ctx.recipe.seed, `${label}/data`)
    const report = Progress.reporter(label, config.steps, 0, ctx.log, config.logEvery)
    for (let s = 0; s < config.steps; s++) {
      const out = yield* trainer.stage.run(trainBatch(draw(s * config.batchSize, config.batchSize))).pipe(Effect.mapError(stageError(label)))
      const margins = Columns.float32Values(out.getChild("margin") as Vector<Float32>)
      const accuracy = margins.reduce((n, m) => n + (m > 0 ? 1 : 0), 0) / margins.length
      ctx.progress.stageStep = s + 1
      ctx.progress.step++
      yield* metrics.record(ctx.progress.step, { [`${label}/loss`]: trainer.lastLoss(), [`${label}/train_accuracy`]: accuracy })
      report(s, [["loss", trainer.lastLoss()], ["train_accuracy", accuracy]])
    }
  })

const plugin: RecipeStage.StagePlugin<typeof Config.Type> = RecipeStage.define({
  name: "reward-model",
  version: "0.1.0",
  description: "train a Bradley-Terry reward model on preference pairs (a file, or built from an earlier grpo stage's rollouts) for later stages' rewards",
  config: Config,
  make: (config) => ({
    kind: "reward-model",
    check: (at) => check(config, at),
    run: (label) =>
      Effect.scoped(
        Effect.gen(function*() {
          const ctx = yield* Run
          const { train, heldout } = yield* buildPairs(ctx, label, config)
          if (train.length === 0) return yield* new StageRunError({ stage: label, message: `no training pair: all ${heldout.length} pairs are held out` })
          mkdirSync(join(ctx.dir.root, "reward-models"), { recursive: true })
          yield* RunDir.write(pairsPathOf(ctx.dir.root, label), RunDir.ipcFile(pairsBatch(train, heldout))).pipe(Effect.mapError(stageError(label)))
          const model = yield* acquireModel(ctx, label, config.init)
          yield* fit(ctx, label, config, model, train)
          const accuracy = yield* Effect.promise(() => RewardModel.accuracy(model, heldout))
          const dir = checkpointOf(ctx.dir.root, label)
          yield* RewardModel.save(dir, model).pipe(Effect.mapError(stageError(label)))
          const values: Record<string, number> = { [`${label}/pairs`]: train.length + heldout.length }
          if (heldout.length > 0) values[`${label}/heldout_accuracy`] = accuracy
          yield* (yield* Metrics.Metrics).record(ctx.progress.step, values)
          const held = heldout.length > 0 ? `held-out accuracy ${(100 * accuracy).toFixed(1)} % on ${heldout.length} pairs` : "no held-out pairs (too few prompts)"
          ctx.log(`[${label}] reward model: ${train.length} training pairs, ${held} → ${dir}`)
        })
      )
  })
})

export default plugin
