/**
 * The GRPO stage's draw by prompt group, in this process or on rollout workers over NATS JetStream
 * (`@r1flow/distributed`). A stage config with a `distributed` section draws each prompt group on its own:
 * group k of the stage (the k-th row at the data cursor, dynamic sampling's extra draws included) samples
 * from the stream of its own seed, `groupSeed(run seed, stage, k)`, through the same draw pipeline
 * (rollout → afterRollout → rewards → afterRewards), and the groups' scored batches are concatenated in
 * group order. Where the group is drawn (here, or on any worker) cannot change its completions, so with
 * `maxStaleness: 0` a run is bitwise the same with 0, 1 or N workers.
 *
 * That is a different draw from the default one (the whole step's batch sampled from the one stream
 * `<stage>/rollout`), so a recipe without the section keeps its numbers; the single-process run to compare
 * a distributed run with is the same recipe with `distributed: { workers: 0 }`.
 *
 * With workers the trainer publishes the groups of a draw and the policy weights by version (the global
 * step before the update), and collects the scored groups in group order (`Trainer.collect`). With
 * `maxStaleness ≥ 1` it publishes the next step's groups before it updates, so the workers sample them
 * while it trains; those samples are then one version stale, and the update corrects for it with
 * truncated importance sampling against the sampler's log-probs (`update.loss.tisCap`, required then).
 * Each drawn row records `policy_version` (stamped where it was drawn) and `staleness` (added by the trainer
 * when it takes the group), so the rollouts parquet says what every sample came from.
 *
 * A trainer killed and resumed from its checkpoint at step c re-runs steps c+1… with the same group ids
 * (data cursor positions) and versions (global steps), so what the killed trainer left on NATS looks like
 * the new one's: its step's tasks and results, results landing late from workers still drawing for it,
 * weights manifests under the same version numbers. None of it is taken as new: `connectTrainer` deletes
 * the run's streams and its fingerprint before the new trainer makes them again (a result the checkpoint
 * does not hold is drawn again, bitwise the same at `maxStaleness: 0`, so nothing is lost), and the new
 * trainer is a new session (`Trainer`): a result of another session is dropped, and a worker holding
 * another session's weights under a version fetches them again. Local workers leave when the trainer that
 * started them is gone (`RolloutWorkerMain`); a nats-server it left running on `<run>/nats` is stopped by
 * the next `NatsServer.start` on that store.
 */
import { spawn, type ChildProcess } from "node:child_process"
import { closeSync, mkdirSync, openSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { Batch, Columns, Config as CoreConfig, Pipeline, Plugin, Rng, Stage, type RewardStage, type UserStage } from "@r1flow/core"
import { jetstreamManager } from "@nats-io/jetstream"
import { Connection, NatsServer, Queues, Trainer, Weights, Worker } from "@r1flow/distributed"
import { DynamicSampling } from "@r1flow/grpo"
import { Lora, Transformer } from "@r1flow/model"
import { Field, Int32, makeData, RecordBatch, Schema as ArrowSchema, Struct } from "apache-arrow"
import { Effect, Schema, type Scope } from "effect"
import { StageRunError, type RunContext } from "./Context.js"
import * as Sampling from "./Sampling.js"

/** The GRPO stage's `distributed` section. */
export const Config = Schema.Struct({
  /** A nats-server to use (`nats://host:4222`); absent: the run starts one on 127.0.0.1, store in `<run>/nats`. */
  nats: Schema.optionalKey(Schema.String),
  /** Local worker processes the run starts (0: groups are drawn in this process, one by one). */
  workers: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(0))),
  /** Policy versions a sample may lag the trainer by (0: synchronous, bitwise the single-process run). */
  maxStaleness: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(0))),
  /** How long a group pulled by a worker that went silent (killed) waits before another worker gets it, in ms. */
  ackWaitMs: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1000)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(30_000)))
})
/** The GRPO stage's `distributed` section. */
export type Config = typeof Config.Type

/** Metric keys of the draw (in `metrics.jsonl`, the same in every mode). */
export const stalenessMean = "async/staleness_mean"
export const stalenessMax = "async/staleness_max"

/** Group `index` of stage `label`'s seed: what its rollout stream is seeded with, here or on any worker. */
export const groupSeed = (runSeed: number, label: string, index: number): number => Rng.hash(`${runSeed}/${label}/rollout/group-${index}`)

/** The run id on NATS of a recipe's stage: it names the streams, so a worker finds the trainer by it. */
export const runId = (recipeName: string, label: string): string => `${recipeName}-${label}`.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 64)

/** KV key (bucket `Weights.KV_BUCKET`) of the trainer's model config, which workers build their policy from. */
export const modelKey = (id: string) => `${id}.model`

/** What one group's draw needs besides the prompts: the stage's sampling and its made reward and user stages. */
export interface DrawParts {
  readonly sampling: Sampling.Config
  readonly groupSize: number
  readonly rewards: RewardStage.RewardStage
  readonly afterRollout: ReadonlyArray<UserStage.UserStage>
  readonly afterRewards: ReadonlyArray<UserStage.UserStage>
}

/** One group's prompts (one row) and its index in the stage. */
export interface Group {
  readonly index: number
  readonly prompts: RecordBatch<Batch.PromptsType>
}

const stageError = (stage: string) => (e: { readonly message: string }) => new Stage.StageError({ stage, message: e.message, cause: e })

/** Column of a drawn group: the policy version (global step before the update) its rows were sampled at. */
export const policyVersionColumn = "policy_version"
/** Column the trainer adds when it takes a group: its version then minus `policy_version`. */
export const stalenessColumn = "staleness"

/** `batch` with an Int32 column `name` of `value` on every row added (stages add columns, never rewrite them). */
const withConstant = (stage: string, batch: RecordBatch<Batch.ScoredType>, name: string, value: number) =>
  Effect.map(
    Stage.addColumns(stage, batch, new ArrowSchema([new Field(name, new Int32(), false)]), { [name]: Columns.makeInt32(new Int32Array(batch.numRows).fill(value)) }),
    (b) => b as unknown as RecordBatch<Batch.ScoredType>
  )

/**
 * One group's draw pipeline over the context's current policy, its rollout drawing from the stream of
 * `seed`, its rows stamped with `version` (`policy_version`; default the context's global step, which is the
 * trainer's version; a worker passes its task's). Built per group (a pipeline is a list of
 * made stages: cheap), checked as the step checks its own.
 */
export const drawGroup = (ctx: RunContext, parts: DrawParts) => (prompts: RecordBatch<Batch.PromptsType>, seed: number, version: number = ctx.progress.step): Effect.Effect<RecordBatch<Batch.ScoredType>, Stage.StageError> =>
  Effect.gen(function*() {
    const rollout = yield* Sampling.rolloutStage(ctx, parts.sampling, { groupSize: parts.groupSize, stream: "rollout" }).pipe(Effect.provideService(Rng.Rng, Rng.makeService(seed)))
    const pipeline = yield* Pipeline.make([rollout, ...parts.afterRollout, parts.rewards, ...parts.afterRewards], {
      source: Batch.Prompts,
      sink: { name: "grpo/dynamic-sampling", input: Batch.Scored }
    }).pipe(Effect.mapError(stageError("grpo/draw")))
    return yield* withConstant("grpo/draw", yield* Pipeline.runBatch(pipeline, prompts), policyVersionColumn, version)
  })

/** `batch` with its `group_id` column set to `id` (a group drawn ahead under another attempt's numbering). */
const withGroupId = (batch: RecordBatch<Batch.ScoredType>, id: number): RecordBatch<Batch.ScoredType> => {
  const ids = Columns.int32Values(batch.getChild("group_id")!)
  if (ids.every((g) => g === id)) return batch
  const children = batch.schema.fields.map((f) => f.name === "group_id" ? Columns.makeInt32(new Int32Array(batch.numRows).fill(id)).data[0] : batch.getChild(f.name as "group_id")!.data[0])
  return new RecordBatch(batch.schema, makeData({ type: new Struct(batch.schema.fields), length: batch.numRows, nullCount: 0, children }))
}

/** Groups' prompts by the step batch they were cut from (`Prompts.batch` of each row), for the draw. */
export type GroupsOf = (batch: RecordBatch<Batch.PromptsType>) => ReadonlyArray<Group>

/** Staleness of the samples of the draws since the last `take` (per group; 0 for groups drawn here). */
export interface Staleness {
  readonly add: (values: ReadonlyArray<number>) => void
  /** `async/staleness_mean` and `_max` since the last call, and the counters reset. */
  readonly take: () => Record<string, number>
}

/** A staleness tally. */
export const staleness = (): Staleness => {
  let all: Array<number> = []
  return {
    add: (values) => {
      all = all.concat(values)
    },
    take: () => {
      const out = { [stalenessMean]: all.length === 0 ? 0 : all.reduce((a, b) => a + b, 0) / all.length, [stalenessMax]: all.length === 0 ? 0 : Math.max(...all) }
      all = []
      return out
    }
  }
}

/** The in-process draw: group by group, each from its own seed, at the trainer's own version, staleness 0. */
export const localDraw = (groupsOf: GroupsOf, seedOf: (index: number) => number, draw: ReturnType<typeof drawGroup>, tally: Staleness) =>
  (prompts: RecordBatch<Batch.PromptsType>) =>
    Effect.map(Effect.forEach(groupsOf(prompts), (g) => Effect.flatMap(draw(g.prompts, seedOf(g.index)), (b) => withConstant("grpo/distributed", b, stalenessColumn, 0))), (batches) => {
      tally.add(batches.map(() => 0))
      return DynamicSampling.concat(batches)
    })

/** What the trainer's draw over NATS needs. */
export interface RemoteOptions {
  readonly trainer: Trainer.Trainer
  readonly config: Config
  readonly ctx: RunContext
  readonly groupsOf: GroupsOf
  readonly seedOf: (index: number) => number
  /** The groups of the next step's first draw, to publish before the update (`maxStaleness ≥ 1`); none after the last step. */
  readonly next: () => ReadonlyArray<Group>
  readonly tally: Staleness
  /** Fails when no worker can draw any more (every local worker exited). */
  readonly alive: Effect.Effect<void, StageRunError>
}

/** The weights workers sample from, HF names: under LoRA the adapters merged in (a worker runs a plain model). */
const weightsOf = (policy: Transformer.Model): Effect.Effect<Map<string, Float32Array>> => Effect.promise(() => Lora.mergedArrays(policy))

/**
 * The draw over NATS: publish the weights of the current version (the global step) when not yet published,
 * publish the draw's groups not yet published, collect them in group order; with `maxStaleness ≥ 1`, then
 * publish the next step's groups so the workers draw them during the update.
 */
export const remoteDraw = (o: RemoteOptions) => {
  const published = new Set<number>()
  const toStage = (e: { readonly message: string }) => new Stage.StageError({ stage: "grpo/distributed", message: e.message, cause: e })
  const publish = (groups: ReadonlyArray<Group>) => {
    const fresh = groups.filter((g) => !published.has(g.index))
    for (const g of fresh) published.add(g.index)
    return o.trainer.publish(fresh.map((g) => ({ groupId: g.index, seed: o.seedOf(g.index), prompts: g.prompts })))
  }
  const collect = (n: number): Effect.Effect<Trainer.Collection, Stage.StageError> =>
    o.trainer.collect(n, { maxStaleness: o.config.maxStaleness, order: "group", timeoutMs: 5000 }).pipe(
      Effect.catchTag("TrainerError", (e) => e.reason === "Timeout" ? Effect.andThen(Effect.mapError(o.alive, toStage), collect(n)) : Effect.fail(toStage(e))),
      Effect.mapError((e) => (e instanceof Stage.StageError ? e : toStage(e)))
    )
  return (prompts: RecordBatch<Batch.PromptsType>) =>
    Effect.gen(function*() {
      const groups = o.groupsOf(prompts)
      const version = o.ctx.progress.step
      if (o.trainer.version() !== version) yield* o.trainer.publishWeights(version, yield* weightsOf(o.ctx.policy)).pipe(Effect.mapError(toStage))
      yield* publish(groups).pipe(Effect.mapError(toStage))
      const got = yield* collect(groups.length)
      const order = got.results.map((r) => r.groupId).join(","), want = groups.map((g) => g.index).join(",")
      if (order !== want) return yield* new Stage.StageError({ stage: "grpo/distributed", message: `collected groups ${order}, expected ${want}: the queue holds groups this draw did not ask for` })
      for (const g of groups) published.delete(g.index)
      o.tally.add(got.results.map((r) => r.staleness))
      if (o.config.maxStaleness >= 1) yield* publish(o.next()).pipe(Effect.mapError(toStage))
      const batches = yield* Effect.forEach(got.results, (r, i) =>
        withConstant("grpo/distributed", withGroupId(r.scored, Columns.int32Values(groups[i].prompts.getChild("group_id")!)[0]), stalenessColumn, r.staleness))
      return DynamicSampling.concat(batches)
    })
}

/** Stable JSON: object keys sorted, so two processes write the same string for the same value. */
export const stableJson = (value: unknown): string =>
  JSON.stringify(value, (_k, v: unknown) => v !== null && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b))) : v)

/** What must match between the trainer and a worker for a worker's groups to be the trainer's. */
export interface FingerprintParts {
  /** `name@version` of each reward plugin, with its entry (weight, column, config, failure policy). */
  readonly rewards: ReadonlyArray<unknown>
  /** The user stages before the advantages, likewise. */
  readonly stages: ReadonlyArray<unknown>
  readonly sampling: Sampling.Config
  readonly groupSize: number
  /** Tokenizer name and vocabulary size. */
  readonly tokenizer: string
  /** `Compute.describe` of the maths (backend, GEMM, kernels). */
  readonly compute: string
}

/** The fingerprint string both sides put on NATS. */
export const fingerprint = (p: FingerprintParts): string => stableJson(p)

/** The parts of a GRPO stage config the fingerprint covers. */
export interface DrawConfig {
  readonly rewards: ReadonlyArray<RewardStage.Entry>
  readonly afterRollout?: ReadonlyArray<UserStage.Entry> | undefined
  readonly afterRewards?: ReadonlyArray<UserStage.Entry> | undefined
  readonly sampling: Sampling.Config
  readonly groupSize: number
}

/**
 * The fingerprint of a GRPO stage's draw: each reward plugin as `name@version` (loaded from `from`) with
 * its entry, the user stages before the advantages, sampling, G, tokenizer and maths.
 */
export const fingerprintOf = (config: DrawConfig, from: string, tokenizer: string, compute: string): Effect.Effect<string, Plugin.PluginError> =>
  Effect.map(Effect.forEach(config.rewards, (entry) =>
    Effect.map(Plugin.load(entry.plugin, { kind: "reward", from }), (p) => ({ ...entry, plugin: `${p.name}@${p.version}` }))), (rewards) =>
    fingerprint({
      rewards,
      stages: [...(config.afterRollout ?? []).map((e) => ({ at: "afterRollout", ...e })), ...(config.afterRewards ?? []).map((e) => ({ at: "afterRewards", ...e }))],
      sampling: config.sampling,
      groupSize: config.groupSize,
      tokenizer,
      compute
    }))

/** The keys of two fingerprints that differ, with both values; empty when equal. */
export const fingerprintDiff = (trainer: string, worker: string): Array<string> => {
  const parse = (s: string): Record<string, unknown> => {
    try {
      const v = JSON.parse(s) as unknown
      return v !== null && typeof v === "object" ? (v as Record<string, unknown>) : { value: s }
    } catch {
      return { value: s }
    }
  }
  const a = parse(trainer), b = parse(worker)
  return [...new Set([...Object.keys(a), ...Object.keys(b)])].sort().flatMap((k) =>
    stableJson(a[k]) === stableJson(b[k]) ? [] : [`${k}: trainer ${stableJson(a[k])}, worker ${stableJson(b[k])}`])
}

/** The entry point local workers run (`RolloutWorkerMain.ts`, built). */
const workerMain = fileURLToPath(new URL("./RolloutWorkerMain.js", import.meta.url))

/** A local worker process and its log file. */
export interface LocalWorker {
  readonly id: string
  readonly process: ChildProcess
  readonly log: string
}

/** What a local worker is told: it loads the run's recorded recipe from `runDir` (`RolloutWorker.Options`). */
export interface LocalWorkerArgs {
  readonly nats: string
  readonly runDir: string
  readonly stage: string
  readonly workerId: string
}

/**
 * Starts `n` worker processes (`RolloutWorkerMain`) on this machine, logs in `<logs>/<id>.log`; stopped
 * (SIGTERM) when the scope closes. Needs the built engine: under the TypeScript sources there is no entry.
 */
export const startLocalWorkers = (n: number, args: Omit<LocalWorkerArgs, "workerId">, logs: string): Effect.Effect<ReadonlyArray<LocalWorker>, StageRunError, Scope.Scope> =>
  Effect.forEach(Array.from({ length: n }, (_, i) => `local-${i + 1}`), (id) =>
    Effect.acquireRelease(
      Effect.try({
        try: () => {
          if (import.meta.url.endsWith(".ts")) throw new Error("local rollout workers run the built engine (dist/RolloutWorkerMain.js); build it (npx nx run @r1flow/engine:build) or start workers with `r1flow worker` and set distributed.nats")
          mkdirSync(logs, { recursive: true })
          const log = join(logs, `${id}.log`)
          const fd = openSync(log, "a")
          const child = spawn(process.execPath, [workerMain, JSON.stringify({ ...args, workerId: id } satisfies LocalWorkerArgs)], { stdio: ["ignore", fd, fd] })
          closeSync(fd)
          return { id, process: child, log }
        },
        catch: (e) => new StageRunError({ stage: args.stage, message: `starting local worker ${id}: ${(e as Error).message}` })
      }),
      (w) => Effect.callback<void>((resume) => {
        if (w.process.exitCode !== null || w.process.signalCode !== null) return resume(Effect.void)
        const timer = setTimeout(() => w.process.kill("SIGKILL"), 5000)
        w.process.once("exit", () => {
          clearTimeout(timer)
          resume(Effect.void)
        })
        w.process.kill("SIGTERM")
      })
    ))

/** Fails, naming their logs, once every local worker has exited (nothing would draw the queued groups). */
export const anyAlive = (stage: string, workers: ReadonlyArray<LocalWorker>): Effect.Effect<void, StageRunError> =>
  Effect.suspend(() =>
    workers.length === 0 || workers.some((w) => w.process.exitCode === null && w.process.signalCode === null)
      ? Effect.void
      : Effect.fail(new StageRunError({ stage, message: `all ${workers.length} local rollout workers exited; see ${workers.map((w) => w.log).join(", ")}` })))

/**
 * The trainer's side on `url`: a connection, the trainer, its model config in KV (for the workers). A
 * trainer starts with nothing outstanding, so what the run's streams still hold (a stopped or killed
 * trainer's groups and results, past its checkpoint) is deleted first, with its fingerprint, so no worker
 * draws for the old trainer and no old result is taken (late ones are dropped by session, `Trainer`).
 */
export const connectTrainer = (stage: string, url: string, id: string, fp: string, ackWaitMs: number, model: Transformer.Config) =>
  Effect.gen(function*() {
    const nc = yield* Connection.open({ url, name: `r1flow-trainer-${id}` })
    const old = yield* Weights.store(nc, id)
    yield* Connection.retrying(Connection.call(nc, `delete ${Worker.fingerprintKey(id)}`, () => old.kv.delete(Worker.fingerprintKey(id))))
    const jsm = yield* Connection.call(nc, "jetstream manager", () => jetstreamManager(nc))
    const n = Queues.names(id)
    for (const name of [n.tasks, n.results, n.data]) {
      yield* Connection.call(nc, `delete stream ${name}`, () => jsm.streams.delete(name).catch((e: unknown) => {
        if (e instanceof Error && /not found/i.test(e.message)) return false
        throw e
      }))
    }
    const trainer = yield* Trainer.make(nc, { runId: id, fingerprint: fp, ackWaitMs })
    const store = yield* Weights.store(nc, id)
    yield* Connection.retrying(Connection.call(nc, `put ${modelKey(id)}`, () => store.kv.put(modelKey(id), JSON.stringify(model))))
    return trainer
  }).pipe(Effect.mapError((e) => new StageRunError({ stage, message: e.message, cause: e })))

/** Starts the run's own nats-server on 127.0.0.1, its JetStream store in `storeDir`. */
export const localServer = (stage: string, storeDir: string) =>
  NatsServer.start({ storeDir }).pipe(Effect.mapError((e) => new StageRunError({ stage, message: e.message, cause: e })))

/** The trainer's fingerprint in KV as a worker reads it (waiting up to `waitMs` for a trainer to write it). */
export const trainerFingerprint = (store: Weights.Store, waitMs: number) =>
  Effect.gen(function*() {
    const deadline = Date.now() + waitMs
    while (true) {
      const entry = yield* Connection.retrying(Connection.call(store.nc, "get fingerprint", () => store.kv.get(Worker.fingerprintKey(store.runId))))
      if (entry !== null && entry.operation === "PUT") return entry.string()
      if (Date.now() > deadline) return undefined
      yield* Effect.sleep(250)
    }
  })

/**
 * `r1flow run --workers N [--nats url]` as `--set` overrides on each `grpo` stage's `distributed` section
 * (recorded in the manifest with the others, so a resume draws the same way); the recipe at `path`, with
 * `overrides` applied, must have a grpo stage.
 */
export const runOverrides = (path: string, overrides: ReadonlyArray<string>, o: { readonly workers?: number; readonly nats?: string }) =>
  Effect.gen(function*() {
    if (o.workers === undefined && o.nats === undefined) return [...overrides]
    const raw = yield* CoreConfig.applyOverrides(yield* CoreConfig.readJson(path), overrides)
    const stages = (raw as { readonly stages?: unknown }).stages
    const indexes = Array.isArray(stages) ? stages.flatMap((s: { readonly stage?: unknown }, i) => (s?.stage === "grpo" ? [i] : [])) : []
    if (indexes.length === 0) return yield* new CoreConfig.ConfigError({ source: path, problems: ["--workers / --nats: the recipe has no grpo stage to draw rollouts for"] })
    return [
      ...overrides,
      ...indexes.flatMap((i) => [
        ...(o.workers !== undefined ? [`stages.${i}.config.distributed.workers=${o.workers}`] : []),
        ...(o.nats !== undefined ? [`stages.${i}.config.distributed.nats=${o.nats}`] : [])
      ])
    ]
  })
