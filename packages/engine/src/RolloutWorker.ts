/**
 * `r1flow worker`: a rollout worker for a recipe's GRPO stage. It builds what the stage's draw needs the
 * way the run builds it (backend, tokenizer, reward plugins, user stages), takes the policy's shape and
 * weights from the trainer over NATS, and runs `Worker.run` with the stage's per-group draw
 * (`Distributed.drawGroup`). A worker whose fingerprint (reward plugins and their configs, user stages,
 * sampling, tokenizer, maths) differs from the trainer's is refused before it draws anything, naming the
 * keys that differ.
 */
import { Config as CoreConfig, RewardStage, UserStage } from "@r1flow/core"
import { Connection, Weights, Worker } from "@r1flow/distributed"
import { Transformer } from "@r1flow/model"
import { Template } from "@r1flow/tokenizer"
import { Effect, Schema } from "effect"
import { existsSync, statSync } from "node:fs"
import { hostname, tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import * as Compute from "./Compute.js"
import type { RunContext } from "./Context.js"
import * as Distributed from "./Distributed.js"
import * as Recipe from "./Recipe.js"
import * as Run from "./Run.js"
import * as RunDir from "./RunDir.js"
import { Config as GrpoConfig } from "./stages/grpo.js"

/** The worker cannot serve the run: no GRPO stage to serve, no trainer, or a fingerprint other than the trainer's. */
export class WorkerError extends Schema.TaggedError<WorkerError>()("WorkerError", {
  reason: Schema.Literals(["Stage", "NoTrainer", "Refused", "Model"]),
  message: Schema.String
}) {}

/** How to run a worker. */
export interface Options {
  readonly nats: string
  /** A recipe file (or built-in name), or a run directory: then the config the run recorded (`manifest.json`). */
  readonly recipe: string
  readonly overrides?: ReadonlyArray<string>
  /** The label of the GRPO stage to serve (default: the recipe's first `grpo` stage). */
  readonly stage?: string
  readonly workerId?: string
  /** How long to wait for the trainer to announce itself, in ms (default 120 s). */
  readonly waitMs?: number
  readonly log?: (line: string) => void
}

/** The recipe and its file: from a run directory's manifest, or a recipe file with overrides. */
const loadRecipe = (o: Options) =>
  Effect.gen(function*() {
    const target = resolve(o.recipe)
    if (existsSync(target) && statSync(target).isDirectory()) {
      const dir = RunDir.at(target)
      const manifest = (yield* RunDir.readJson(dir.manifest)) as Record<string, unknown>
      const recipe = yield* CoreConfig.decode(Recipe.Recipe, manifest.recipe, { source: `${dir.manifest} (recipe)` })
      return { recipe, recipePath: String(manifest.recipeFile ?? dir.manifest) }
    }
    const path = Run.resolveRecipe(o.recipe)
    const { recipe } = yield* Run.load(path, o.overrides)
    return { recipe, recipePath: path }
  })

/** The GRPO stage to serve: its label, index and decoded config. */
const grpoStage = (recipe: Recipe.Recipe, recipePath: string, label: string | undefined) =>
  Effect.gen(function*() {
    const index = recipe.stages.findIndex((e) => e.stage === "grpo" && (label === undefined || (e.name ?? e.stage) === label))
    if (index < 0) {
      return yield* new WorkerError({ reason: "Stage", message: `${recipePath}: ${label === undefined ? "no grpo stage" : `no grpo stage labelled ${JSON.stringify(label)}`} to serve (stages: ${recipe.stages.map((e) => e.name ?? e.stage).join(", ")})` })
    }
    const entry = recipe.stages[index]
    const config = yield* CoreConfig.decode(GrpoConfig, entry.config ?? {}, { source: recipePath, prefix: `stages[${index}].config` })
    return { label: entry.name ?? entry.stage, index, config }
  })

/** A worker's failure: its own (`WorkerError`) or a config, plugin, stage, NATS or weights error, each tagged. */
export type Failure = { readonly _tag: string; readonly message: string }

/** Finds the trainer of run `id`, refuses a draw that differs from its, and reads the model config it published. */
const handshake = (nc: Parameters<typeof Weights.store>[0], id: string, fp: string, workerId: string, o: Options) =>
  Effect.gen(function*() {
    const store = yield* Weights.store(nc, id)
    const theirs = yield* Distributed.trainerFingerprint(store, o.waitMs ?? 120_000)
    if (theirs === undefined) return yield* new WorkerError({ reason: "NoTrainer", message: `worker ${workerId}: no trainer of run ${id} on ${o.nats} within ${Math.round((o.waitMs ?? 120_000) / 1000)} s (start \`r1flow run\` with distributed.nats set to this server)` })
    const diff = Distributed.fingerprintDiff(theirs, fp)
    if (diff.length > 0) return yield* new WorkerError({ reason: "Refused", message: `worker ${workerId} refused by run ${id}: its draw differs from the trainer's (reward plugins, user stages, sampling, tokenizer and maths must match):\n  ${diff.join("\n  ")}` })
    const modelEntry = yield* Connection.retrying(Connection.call(nc, `get ${Distributed.modelKey(id)}`, () => store.kv.get(Distributed.modelKey(id))))
    if (modelEntry === null) return yield* new WorkerError({ reason: "Model", message: `run ${id}: the trainer published no model config (${Distributed.modelKey(id)})` })
    return yield* Schema.decodeUnknownEffect(Schema.fromJsonString(Transformer.Config))(modelEntry.string()).pipe(
      Effect.mapError((e) => new WorkerError({ reason: "Model", message: `run ${id}: the trainer's model config does not decode: ${e.message}` })))
  })

/** The draw reads only the policy, the tokenizer and the template; the rest of a run's context has no use in a worker. */
const workerContext = (recipe: Recipe.Recipe, recipeDir: string, tokenizer: RunContext["tokenizer"], log: (line: string) => void, policy: () => Transformer.Model | undefined): RunContext => ({
  recipe,
  recipeDir,
  dir: RunDir.at(join(tmpdir(), "r1flow-worker-has-no-run-dir")),
  tokenizer,
  data: { train: [], test: [], corpus: [] },
  get policy() {
    const p = policy()
    if (p === undefined) throw new Error("no weights loaded yet")
    return p
  },
  set policy(_) {},
  progress: { step: 0, stageIndex: 0, stageStep: 0, cursor: 0 },
  promptIds: (q) => Template.prompt(tokenizer, recipe.template ?? "r1-zero", q),
  log,
  perf: () => {},
  checkpointEvery: 0,
  checkpoint: () => Effect.void
})

/** Runs a worker until interrupted (or refused). */
export const run = (o: Options): Effect.Effect<never, Failure> =>
  Effect.scoped(Effect.gen(function*() {
    const log = o.log ?? ((line: string) => console.log(line))
    const workerId = o.workerId ?? `${hostname()}-${process.pid}`
    const { recipe, recipePath } = yield* loadRecipe(o)
    const recipeDir = dirname(recipePath)
    const { label, config } = yield* grpoStage(recipe, recipePath, o.stage)
    const distributed = config.distributed ?? (yield* CoreConfig.decode(Distributed.Config, {}, { source: recipePath }))
    const { backend, tokenizer } = yield* Run.workerInputs(recipe, recipePath)
    const compute = Compute.describe(Compute.of(backend))
    const fp = yield* Distributed.fingerprintOf(config, recipeDir, `${tokenizer.name} ${tokenizer.vocabSize}`, compute)
    const id = Distributed.runId(recipe.name, label)
    log(`worker ${workerId} (pid ${process.pid}): run ${id} (stage ${label} of ${recipePath}) on ${o.nats}; ${compute}`)

    const nc = yield* Connection.open({ url: o.nats, name: `r1flow-worker-${workerId}` })
    const model = yield* handshake(nc, id, fp, workerId, o)
    const rewards = yield* RewardStage.loadScoped({ rewards: config.rewards }, { from: recipeDir })
    const afterRollout = yield* UserStage.loadAll(config.afterRollout, { from: recipeDir, where: `${label}.afterRollout` })
    const afterRewards = yield* UserStage.loadAll(config.afterRewards, { from: recipeDir, where: `${label}.afterRewards` })

    let policy: Transformer.Model | undefined
    yield* Effect.addFinalizer(() => Effect.sync(() => policy?.dispose()))
    const ctx = workerContext(recipe, recipeDir, tokenizer, log, () => policy)
    const draw = Distributed.drawGroup(ctx, { sampling: config.sampling, groupSize: config.groupSize, rewards, afterRollout, afterRewards })
    return yield* Worker.run(nc, {
      runId: id,
      workerId,
      fingerprint: fp,
      ackWaitMs: distributed.ackWaitMs,
      draw: (prompts, meta) => Effect.andThen(Effect.sync(() => log(`worker ${workerId}: drawing group ${meta.groupId} at version ${meta.policyVersion}`)), draw(prompts, meta.seed, meta.policyVersion)),
      load: (version, tensors) =>
        Effect.sync(() => {
          const next = Transformer.fromArrays(model, tensors, false)
          policy?.dispose()
          policy = next
          log(`worker ${workerId}: weights version ${version}`)
        }),
      onGroup: (task) => log(`worker ${workerId}: group ${task.groupId} at version ${task.policyVersion}`)
    })
  }))
