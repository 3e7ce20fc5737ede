/**
 * The `r1flow` command: run, resume, eval, export, report, plugins, new reward.
 *
 * Errors print as one clear line (what failed) plus the detail, and exit with status 1.
 */
import { Plugin } from "@r1flow/core"
import { Distributed, Export, Recipe, Report, RolloutWorker, Run } from "@r1flow/engine"
import type { NodeServices } from "@effect/platform-node"
import { Console, Effect, Option } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import { execFileSync } from "node:child_process"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"

const repoTools = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "tools", "scripts")

const pct = (x: number) => `${(100 * x).toFixed(1)} %`

/** The before/after table of a run's first and last evaluation. */
export const comparison = (evals: ReadonlyArray<Report.EvalRecord>): Array<string> => {
  if (evals.length === 0) return []
  const first = evals[0], last = evals[evals.length - 1]
  const row = (name: string, a: string, b: string) => `  ${name.padEnd(30)} ${a.padStart(12)} ${b.padStart(12)}`
  const lines = [
    "",
    row("held-out", `${first.name}`, `${last.name}`),
    row("accuracy (pass@1)", pct(first.accuracy), pct(last.accuracy)),
    row("format rate", pct(first.formatRate), pct(last.formatRate)),
    row("mean completion length", first.meanLength.toFixed(1), last.meanLength.toFixed(1))
  ]
  if (evals.length > 1) lines.push("", `held-out accuracy: ${pct(first.accuracy)} before → ${pct(last.accuracy)} after (${((last.accuracy - first.accuracy) * 100 >= 0 ? "+" : "")}${((last.accuracy - first.accuracy) * 100).toFixed(1)} points)`)
  return lines
}

const sets = Flag.String("set").pipe(
  Flag.withDescription("Override a config key: --set seed=2, --set stages.2.config.steps=60 (repeatable; values parse as JSON when they can)"),
  Flag.atLeast(0)
)

const run = Command.make(
  "run",
  {
    recipe: Argument.String("recipe").pipe(Argument.withDescription(`A built-in recipe (${Run.builtinRecipes().join(", ")}) or a path to a recipe JSON file`)),
    set: sets,
    workers: Flag.Int("workers").pipe(
      Flag.withDescription("Draw the GRPO rollouts on N local worker processes (a local nats-server is started, JetStream store in the run directory, unless --nats names one); sets each grpo stage's distributed.workers"),
      Flag.optional
    ),
    nats: Flag.String("nats").pipe(Flag.withDescription("Use this nats-server (nats://host:4222; credentials from R1FLOW_NATS_USER / R1FLOW_NATS_PASSWORD) for the rollout workers; sets distributed.nats"), Flag.optional)
  },
  Effect.fn(function*({ recipe, set, workers, nats }) {
    const path = Run.resolveRecipe(recipe)
    const overrides = yield* Distributed.runOverrides(path, set, {
      ...(Option.isSome(workers) ? { workers: workers.value } : {}),
      ...(Option.isSome(nats) ? { nats: nats.value } : {})
    })
    const result = yield* Run.run(path, { overrides })
    for (const line of comparison(result.evals)) yield* Console.log(line)
    yield* Console.log(`\nrun directory: ${result.dir.root}  (report: ${result.dir.report})`)
    yield* Console.log(`backend: ${result.backend.name}; wall time ${(result.seconds / 60).toFixed(1)} min`)
  })
).pipe(Command.withDescription("Run a recipe (pretrain, SFT, GRPO, rejection sampling, eval stages) and write a run directory"))

const resume = Command.make(
  "resume",
  {
    run: Argument.String("run-dir").pipe(Argument.withDescription("A run directory under runs/")),
    allowBackendChange: Flag.Boolean("allow-backend-change").pipe(
      Flag.withDescription("Continue although this machine's maths (backend, kernels, GEMM: R1FLOW_BACKEND, R1FLOW_NATIVE, R1FLOW_NO_BLAS) differ from the checkpoint's; the result is then not bitwise identical to an uninterrupted run"),
      Flag.withDefault(false)
    )
  },
  Effect.fn(function*({ run: dir, allowBackendChange }) {
    const result = yield* Run.resume(dir, { allowBackendChange })
    for (const line of comparison(result.evals)) yield* Console.log(line)
    yield* Console.log(`\nrun directory: ${result.dir.root}`)
  })
).pipe(Command.withDescription("Continue an interrupted run from its latest checkpoint, with the config it started with (edits to the recipe file since are named in a notice, not applied); a finished run is left as it is"))

const evalCmd = Command.make(
  "eval",
  {
    target: Argument.String("run-or-checkpoint").pipe(Argument.withDescription("A run directory (its latest checkpoint) or a checkpoint directory")),
    data: Flag.String("data").pipe(Flag.withDescription("Evaluation data: a GSM8K-style JSONL file, or `held-out` for the run's own held-out split"), Flag.withDefault("held-out")),
    samples: Flag.Int("samples").pipe(Flag.withDescription("k samples per problem (pass@1 averages them; cons@k votes)"), Flag.withDefault(1)),
    temperature: Flag.Finite("temperature").pipe(Flag.withDescription("Sampling temperature (0 = greedy; R1 evaluates at 0.6)"), Flag.withDefault(0)),
    topP: Flag.Finite("top-p").pipe(Flag.withDescription("Nucleus sampling: sample from the smallest set of tokens whose probability reaches p (R1 evaluates at 0.95)"), Flag.optional),
    limit: Flag.Int("limit").pipe(Flag.withDescription("Evaluate the first N problems"), Flag.optional)
  },
  Effect.fn(function*({ target, data, samples, temperature, topP, limit }) {
    const record = yield* Run.evaluate(target, {
      data,
      samples,
      temperature,
      ...(Option.isSome(topP) ? { topP: topP.value } : {}),
      ...(Option.isSome(limit) ? { limit: limit.value } : {})
    })
    const cons = samples > 1 ? `   cons@${samples}: ${pct(record.consAccuracy as number)}` : ""
    yield* Console.log(`accuracy (pass@1 over ${samples}): ${pct(record.accuracy)}${cons}   format: ${pct(record.formatRate)}   mean length: ${record.meanLength.toFixed(1)}`)
    yield* Console.log(`written to ${record.file}`)
  })
).pipe(Command.withDescription("Evaluate a run's policy or a checkpoint on held-out data (safe while the run trains: writes only evals/standalone/<label>-<time>.json)"))

const worker = Command.make(
  "worker",
  {
    nats: Flag.String("nats").pipe(Flag.withDescription("The trainer's nats-server, nats://host:4222 (credentials from R1FLOW_NATS_USER / R1FLOW_NATS_PASSWORD or R1FLOW_NATS_NKEY)")),
    recipe: Flag.String("recipe").pipe(Flag.withDescription("The trainer's recipe (file or built-in name) or its run directory; the worker must draw as the trainer does")),
    set: sets,
    stage: Flag.String("stage").pipe(Flag.withDescription("The label of the grpo stage to serve (default: the first grpo stage)"), Flag.optional),
    id: Flag.String("id").pipe(Flag.withDescription("This worker's name in logs (default host-pid)"), Flag.optional)
  },
  Effect.fn(function*({ nats, recipe, set, stage, id }) {
    yield* RolloutWorker.run({
      nats,
      recipe,
      overrides: set,
      ...(Option.isSome(stage) ? { stage: stage.value } : {}),
      ...(Option.isSome(id) ? { workerId: id.value } : {})
    })
  })
).pipe(Command.withDescription("Draw GRPO rollouts for a trainer over NATS: pull prompt groups, sample with the trainer's weights, score with the recipe's rewards, publish them (refused when its rewards, sampling or maths differ from the trainer's)"))

const exportCmd = Command.make(
  "export",
  {
    target: Argument.String("run-or-checkpoint").pipe(Argument.withDescription("A run directory (its latest checkpoint) or a checkpoint directory (…/checkpoints/step-N)")),
    out: Argument.String("out-dir").pipe(Argument.withDescription("The Hugging Face model directory to write (created if needed)")),
    dtype: Flag.Literals("dtype", ["float32", "float16", "bfloat16"]).pipe(
      Flag.withDescription("Stored dtype (default: the source model's when the run started from model.from, else float32); f16/bf16 round to nearest even"),
      Flag.optional
    ),
    maxShardSize: Flag.String("max-shard-size").pipe(Flag.withDescription("Split the weights into shards of at most this size, with model.safetensors.index.json (5GB = 5·10⁹ bytes, 2GiB = 2·2³⁰)"), Flag.withDefault("5GB")),
    adapter: Flag.Boolean("adapter").pipe(Flag.withDescription("A LoRA run (model.lora): write its adapters as a PEFT adapter directory (adapter_config.json, adapter_model.safetensors) instead of the merged model"), Flag.withDefault(false))
  },
  Effect.fn(function*({ target, out, dtype, maxShardSize, adapter }) {
    const result = yield* Export.run(target, out, { maxShardSize, adapter, ...(Option.isSome(dtype) ? { dtype: dtype.value } : {}) })
    if (result.exported !== null) yield* Console.log(`written: ${result.exported.files.join(", ")}`)
  })
).pipe(Command.withDescription("Write a run's policy as a Hugging Face model directory (config.json, safetensors, generation_config.json, the run's Hugging Face tokenizer files) for transformers, vLLM or llama.cpp's converter; a LoRA run's adapters merged in, or with --adapter as a PEFT adapter directory"))

const report = Command.make(
  "report",
  { run: Argument.String("run-dir") },
  Effect.fn(function*({ run: dir }) {
    const path = yield* Run.report(dir)
    yield* Console.log(`report written: ${path}`)
  })
).pipe(Command.withDescription("Write report.html (plots and samples) for a run directory"))

const plugins = Command.make(
  "plugins",
  {},
  Effect.fn(function*() {
    const found = yield* Plugin.discover(join(process.cwd(), "node_modules"))
    const stages = Object.entries(Recipe.builtinStages)
    yield* Console.log("stage plugins (built in):")
    for (const [name, spec] of stages) {
      const r = yield* Effect.result(Plugin.load(spec, { kind: "stage" }))
      yield* Console.log(`  ${name.padEnd(22)} ${r._tag === "Success" ? `ok   ${r.success.description}` : `INVALID: ${r.failure.message}`}`)
    }
    yield* Console.log("installed plugin packages:")
    for (const p of found) {
      const r = yield* Effect.result(Plugin.load(p.name))
      yield* Console.log(`  ${`${p.name}@${p.version}`.padEnd(44)} ${r._tag === "Success" ? `ok   ${r.success.kind}: ${r.success.description}` : `INVALID: ${r.failure.message}`}`)
    }
  })
).pipe(Command.withDescription("List installed plugins and whether each loads and validates"))

const newReward = Command.make(
  "reward",
  { name: Argument.String("name").pipe(Argument.withDescription("The reward's name, e.g. my-reward (creates plugins/reward-<name>)")) },
  Effect.fn(function*({ name }) {
    yield* Effect.try({
      try: () => execFileSync(process.execPath, [join(repoTools, "new-reward.mjs"), name], { stdio: "inherit" }),
      catch: (e) => new Plugin.PluginError({ plugin: name, message: `the generator failed: ${(e as Error).message}` })
    })
  })
).pipe(Command.withDescription("Create a reward plugin package with its schema, a test and the conformance suite"))

const newCmd = Command.make("new").pipe(Command.withDescription("Create a new plugin package"), Command.withSubcommands([newReward]))

const r1flow = Command.make("r1flow").pipe(
  Command.withDescription("Train reasoning language models the DeepSeek-R1 way: GRPO on rule rewards, in TypeScript"),
  Command.withSubcommands([run, resume, worker, evalCmd, exportCmd, report, plugins, newCmd])
)

/** The whole CLI as one program over `process.argv`; it needs the Node platform services. */
export const program: Effect.Effect<void, unknown, NodeServices.NodeServices> = Command.run(r1flow, { version: "0.1.0" })

