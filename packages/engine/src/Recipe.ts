/**
 * A recipe: the whole experiment as one JSON config a user can copy and edit.
 *
 * It names the task (or a weighted mixture of tasks), the tokenizer, the policy's shape (or a checkpoint to start from) and an ordered
 * list of stages. Each stage entry names a stage plugin (a built-in: `pretrain`, `sft`, `grpo`,
 * `rejection-sampling`, `eval`; or any package name or path whose default export is a stage plugin) and
 * that plugin's own config, decoded by the plugin's schema with errors prefixed `stages[i].config`.
 */
import { Backend } from "@r1flow/backend"
import { Lora } from "@r1flow/model"
import { Effect, Schema } from "effect"

const PositiveInt = Schema.Int.check(Schema.isGreaterThan(0))

/** Column names of a JSONL / Parquet file that hold the task's fields. */
export const Mapping = Schema.Struct({
  question: Schema.String,
  answer: Schema.String,
  id: Schema.optionalKey(Schema.String)
})

/** Where one task's prompts come from. */
export const SingleTask = Schema.Union([
  Schema.Struct({
    kind: Schema.Literal("arithmetic"),
    /** Operand digit counts [min, max]. */
    digits: Schema.Tuple([PositiveInt, PositiveInt]),
    ops: Schema.Array(Schema.Literals(["+", "-", "*"])),
    train: PositiveInt,
    test: PositiveInt
  }),
  Schema.Struct({
    kind: Schema.Literal("countdown"),
    numbers: Schema.Literals([3, 4]),
    maxTarget: PositiveInt,
    train: PositiveInt,
    test: PositiveInt
  }),
  Schema.Struct({
    kind: Schema.Literal("gsm8k"),
    train: Schema.String,
    test: Schema.String,
    onError: Schema.optionalKey(Schema.Literals(["skip", "fail"]))
  }),
  // One member per kind (not `Literals`): a member keyed by one literal `kind` is the only one a value of
  // that kind is checked against, so a mistake is reported against its own kind's keys alone.
  ...(["jsonl", "parquet"] as const).map((kind) =>
    Schema.Struct({
      kind: Schema.Literal(kind),
      train: Schema.String,
      test: Schema.String,
      mapping: Mapping,
      onError: Schema.optionalKey(Schema.Literals(["skip", "fail"]))
    }))
])
/** Where one task's prompts come from. */
export type SingleTask = typeof SingleTask.Type

/** A task's name: in rows' `metadata.task`, reward `tasks` lists, ids, metric keys and eval records. */
const TaskName = Schema.String.check(Schema.isPattern(/^[A-Za-z0-9._-]+$/))

/** One task of a mixture: its name (default: its kind, when no other task has that kind) and its weight in the draw. */
export const MixtureEntry = Schema.Struct({
  name: Schema.optionalKey(TaskName),
  /** Relative share of the train draws (default 1). */
  weight: Schema.Finite.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(1))),
  task: SingleTask
})
/** One task of a mixture. */
export type MixtureEntry = typeof MixtureEntry.Type

/** Problems of a mixture's names, at their paths: a default name its kind cannot give, a name used twice. */
const mixtureIssues = (entries: ReadonlyArray<MixtureEntry>): Array<Schema.FilterIssue> => {
  const kinds = new Map<string, number>()
  for (const e of entries) kinds.set(e.task.kind, (kinds.get(e.task.kind) ?? 0) + 1)
  const seen = new Map<string, number>()
  const issues: Array<Schema.FilterIssue> = []
  entries.forEach((e, i) => {
    if (e.name === undefined && (kinds.get(e.task.kind) ?? 0) > 1) {
      issues.push({ path: ["tasks", i, "name"], issue: `missing: ${kinds.get(e.task.kind)} tasks are of kind "${e.task.kind}", so each needs its own name` })
      return
    }
    const name = e.name ?? e.task.kind
    const before = seen.get(name)
    if (before !== undefined) issues.push({ path: ["tasks", i, "name"], issue: `"${name}" is already the name of tasks[${before}]; task names must be unique` })
    else seen.set(name, i)
  })
  return issues
}

/**
 * A weighted mixture of tasks: every row keeps its task's name in `metadata.task`, train draws follow the
 * weights (`Prompts.taskSampler`), held-out is every task's test split. No mixture inside a mixture.
 */
export const Mixture = Schema.Struct({
  kind: Schema.Literal("mixture"),
  tasks: Schema.Array(MixtureEntry).check(Schema.isMinLength(1))
}).check(Schema.makeFilter((m) => mixtureIssues(m.tasks)))
/** A weighted mixture of tasks. */
export type Mixture = typeof Mixture.Type

/** Where the prompts come from: one task, or a weighted mixture of them. */
export const Task = Schema.Union([...SingleTask.members, Mixture])
/** Where the prompts come from. */
export type Task = typeof Task.Type

/** One task of the recipe as the data and the evals see it: its name, weight and definition. */
export interface NamedTask {
  readonly name: string
  readonly weight: number
  readonly task: SingleTask
}

/** The recipe's tasks, in order: a mixture's entries (names resolved), or the single task named by its kind with weight 1. */
export const tasksOf = (task: Task): ReadonlyArray<NamedTask> =>
  task.kind === "mixture"
    ? task.tasks.map((e) => ({ name: e.name ?? e.task.kind, weight: e.weight, task: e.task }))
    : [{ name: task.kind, weight: 1, task }]

/**
 * The tokenizer: a standard tiktoken encoding, a compact vocabulary built from the run's corpus, or a Hugging
 * Face model directory's `tokenizer.json` + `tokenizer_config.json` (`hf`; `dir` defaults to `model.from`).
 */
export const Tokenizer = Schema.Union([
  Schema.Struct({ kind: Schema.Literal("standard"), encoding: Schema.Literals(["cl100k_base", "o200k_base", "r50k_base", "gpt2"]) }),
  Schema.Struct({ kind: Schema.Literal("hf"), dir: Schema.optionalKey(Schema.String) }),
  Schema.Struct({
    kind: Schema.Literal("compact"),
    base: Schema.Literals(["cl100k_base", "o200k_base", "r50k_base", "gpt2"]),
    size: PositiveInt,
    /** One digit per token (see `Compact.build`); what arithmetic needs from a small model. */
    splitDigits: Schema.optionalKey(Schema.Boolean)
  })
])

/** The policy's shape (the vocabulary size comes from the tokenizer). */
export const Model = Schema.Struct({
  dModel: PositiveInt,
  nLayers: PositiveInt,
  nHeads: PositiveInt,
  nKvHeads: PositiveInt,
  dFf: PositiveInt,
  maxSeqLen: PositiveInt,
  ropeTheta: Schema.optionalKey(Schema.Number),
  tieEmbeddings: Schema.optionalKey(Schema.Boolean),
  /** Start from this checkpoint directory instead of a fresh initialisation. */
  checkpoint: Schema.optionalKey(Schema.String)
})
/** The policy's shape (the vocabulary size comes from the tokenizer). */
export type Model = typeof Model.Type

/** The shape keys a fresh model needs and a Hugging Face `config.json` fixes, with that file's key for each. */
export const shapeKeys = {
  dModel: "hidden_size",
  nLayers: "num_hidden_layers",
  nHeads: "num_attention_heads",
  nKvHeads: "num_key_value_heads",
  dFf: "intermediate_size",
  ropeTheta: "rope_theta",
  tieEmbeddings: "tie_word_embeddings"
} as const

/**
 * `model.lora`: `Lora.Config`, i.e. rank r, α (the update is scaled by α/r) and the Linear layers adapted in
 * every block, all seven unless `targets` names fewer. The adapters are drawn from the run's seed (stream
 * "model/lora").
 */
export const LoraSection = Lora.Config

/**
 * The recipe's `model` section: a fresh model's shape (`Model`), or `from`, a Hugging Face model directory
 * (relative to the recipe file's directory; a `--set` value to the working directory) whose `config.json`
 * fixes the shape: the shape keys are then optional and, when given, must equal the file's, and `maxSeqLen`
 * caps the context (the rotary tables) below its `max_position_embeddings`.
 */
export const PolicyModel = Schema.Struct({
  dModel: Schema.optionalKey(PositiveInt),
  nLayers: Schema.optionalKey(PositiveInt),
  nHeads: Schema.optionalKey(PositiveInt),
  nKvHeads: Schema.optionalKey(PositiveInt),
  dFf: Schema.optionalKey(PositiveInt),
  maxSeqLen: Schema.optionalKey(PositiveInt),
  ropeTheta: Schema.optionalKey(Schema.Number),
  tieEmbeddings: Schema.optionalKey(Schema.Boolean),
  /** Start from this r1flow checkpoint directory instead of a fresh initialisation. */
  checkpoint: Schema.optionalKey(Schema.String),
  /** Start from this Hugging Face model directory (`config.json` + safetensors). */
  from: Schema.optionalKey(Schema.String),
  /** Train LoRA adapters on the frozen model instead of every weight (full fine-tuning when absent). */
  lora: Schema.optionalKey(LoraSection)
})
/** The recipe's `model` section. */
export type PolicyModel = typeof PolicyModel.Type

const required = ["dModel", "nLayers", "nHeads", "nKvHeads", "dFf", "maxSeqLen"] as const

/**
 * The fresh model's shape of a `model` section without `from`, or the problems (`model.<key>: …`) that
 * keep it from being one: a missing shape key, or `from` and `checkpoint` both set.
 */
export const shapeOf = (m: PolicyModel): Model | Array<string> => {
  if (m.from !== undefined && m.checkpoint !== undefined) return ["model.from, model.checkpoint: set one of them (a Hugging Face directory or an r1flow checkpoint)"]
  const missing = required.filter((k) => m[k] === undefined)
  if (missing.length > 0) return missing.map((k) => `model.${k}: missing (give the model's shape, or model.from=<dir> to start from a Hugging Face model directory)`)
  const { from: _from, lora: _lora, ...shape } = m
  return shape as Model
}

/**
 * What `model.lora` rules out elsewhere in the recipe, as `stages[i].config.<key>: …` problems: a GRPO
 * reference refreshed from the policy (`update.refSyncSteps` > 0), since under LoRA the reference is the
 * frozen base with the adapters off.
 */
export const loraProblems = (recipe: { readonly model: PolicyModel; readonly stages: ReadonlyArray<{ readonly stage: string; readonly config?: unknown }> }): Array<string> => {
  if (recipe.model.lora === undefined) return []
  return recipe.stages.flatMap((s, i) => {
    const sync = (s.config as { update?: { refSyncSteps?: unknown } } | undefined)?.update?.refSyncSteps
    return s.stage === "grpo" && typeof sync === "number" && sync > 0
      ? [`stages[${i}].config.update.refSyncSteps: ${sync}, but must be 0 under model.lora (the reference is the base with the adapters off, which never moves)`]
      : []
  })
}

/** One stage of the recipe. */
export const StageEntry = Schema.Struct({
  /** Built-in name or a package name / path of a stage plugin. */
  stage: Schema.String,
  /** A label for logs, metrics and eval files (default: the stage's name). */
  name: Schema.optionalKey(Schema.String),
  /**
   * The stage plugin's config. Opaque to the recipe by design (the plugin brings its schema): `Run` decodes it
   * whole by that schema, then runs the stage's `check`, for every stage before the first one runs.
   */
  config: Schema.optionalKey(Schema.Unknown)
})

/** The whole experiment. */
export const Recipe = Schema.Struct({
  name: Schema.String.check(Schema.isPattern(/^[A-Za-z0-9._-]+$/)),
  seed: Schema.Int,
  /** `auto` (the first that loads, by the run's size) or one of `Backend.Name`, forced. */
  backend: Schema.optionalKey(Schema.Union([Schema.Literal("auto"), Backend.Name])),
  /** Where `runs/` goes (default `runs` under the working directory). */
  runsDir: Schema.optionalKey(Schema.String),
  task: Task,
  tokenizer: Tokenizer,
  /**
   * Prompt format: R1-Zero's plain template, a chat format with system/user/assistant turns, or `model`: the
   * model's own chat template (`chat_template` of an `hf` tokenizer's `tokenizer_config.json`).
   */
  template: Schema.optionalKey(Schema.Literals(["r1-zero", "chat", "model"])),
  model: PolicyModel,
  /** The base corpus of worked solutions (generated tasks): how many, and the share deliberately flawed. */
  corpus: Schema.optionalKey(Schema.Struct({ count: PositiveInt, wrongFraction: Schema.optionalKey(Schema.Finite) })),
  /** Checkpoints: every `every` steps inside a stage (0: only at stage ends), keeping the newest `keep`. */
  checkpoint: Schema.optionalKey(Schema.Struct({ every: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)), keep: Schema.optionalKey(PositiveInt) })),
  stages: Schema.Array(StageEntry).check(Schema.isMinLength(1))
})
/** The whole experiment. */
export type Recipe = typeof Recipe.Type

/** Built-in stage names and the plugin specifiers they stand for. */
export const builtinStages: Readonly<Record<string, string>> = {
  pretrain: "@r1flow/engine/stages/pretrain",
  sft: "@r1flow/engine/stages/sft",
  grpo: "@r1flow/engine/stages/grpo",
  "rejection-sampling": "@r1flow/engine/stages/rejection-sampling",
  eval: "@r1flow/engine/stages/eval",
  student: "@r1flow/engine/stages/student",
  "reward-model": "@r1flow/engine/stages/reward-model"
}

/** The transformer config for a recipe's model section and a vocabulary size. */
export const modelConfig = (m: Model, vocabSize: number) => ({
  vocabSize,
  dModel: m.dModel,
  nLayers: m.nLayers,
  nHeads: m.nHeads,
  nKvHeads: m.nKvHeads,
  dFf: m.dFf,
  maxSeqLen: m.maxSeqLen,
  ropeTheta: m.ropeTheta ?? 10000,
  normEps: 1e-5,
  tieEmbeddings: m.tieEmbeddings ?? true
})

const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === "object" && x !== null && !Array.isArray(x)

const diff = (a: unknown, b: unknown, path: string): Array<string> => {
  if (Array.isArray(a) && Array.isArray(b)) {
    return Array.from({ length: Math.max(a.length, b.length) }, (_, i) => diff(a[i], b[i], `${path}[${i}]`)).flat()
  }
  if (isRecord(a) && isRecord(b)) {
    return [...new Set([...Object.keys(a), ...Object.keys(b)])].flatMap((k) => diff(a[k], b[k], path === "" ? k : `${path}.${k}`))
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [path === "" ? "(the whole recipe)" : path]
}

/** The key paths (`stages[2].config.steps`) where two raw recipes differ, sorted. */
export const changedKeys = (a: unknown, b: unknown): Array<string> => diff(a, b, "").sort()
