/**
 * A Hugging Face model directory as a run's starting point (`model.from`) and as its tokenizer
 * (`tokenizer.kind: "hf"`): where they are, the checks made before any work (config.json and every
 * shard header, the recipe's `model.*` keys against config.json, the checkpoint's vocabulary against
 * the tokenizer's id space, a chat template where `template: "model"` needs one), and what the run
 * directory keeps of them so that resume and export need neither directory again:
 *
 *   <run>/tokenizer/   the tokenizer files (`Checkpoint.TOKENIZER_FILES` found in the tokenizer's directory)
 *   <run>/origin/      the source's config.json and generation_config.json (export writes the family back)
 *
 * Every refusal is one line naming the file and the key.
 */
import { Config as CoreConfig } from "@r1flow/core"
import { Checkpoint, type HfConfig } from "@r1flow/model"
import { type Codec, HfTokenizer } from "@r1flow/tokenizer"
import { Effect, Schema } from "effect"
import { copyFileSync, existsSync, mkdirSync, readFileSync } from "node:fs"
import { dirname, isAbsolute, join, resolve } from "node:path"
import * as Recipe from "./Recipe.js"

/** A model or tokenizer directory the run cannot start from; `message` is one line: `<file>: key <key>: <problem>`. */
export class ModelSourceError extends Schema.TaggedError<ModelSourceError>()("ModelSourceError", {
  file: Schema.String,
  key: Schema.optional(Schema.String),
  message: Schema.String
}) {}

/** The model library's error as one line naming its file and key or tensor. */
export const fromCheckpoint = (e: Checkpoint.CheckpointError): ModelSourceError =>
  new ModelSourceError({ file: e.path, ...(e.key !== undefined ? { key: e.key } : e.tensor !== undefined ? { key: e.tensor } : {}), message: Checkpoint.describe(e) })

/** The tokenizer library's error (already one line, `<file>: <key>: <problem>`). */
export const fromTokenizer = (e: HfTokenizer.HfTokenizerError): ModelSourceError => new ModelSourceError({ file: e.file, key: e.key, message: e.message })

/** The directory a run's files live in (`<run>/tokenizer`, `<run>/origin`). */
export const TOKENIZER_DIR = "tokenizer"
export const ORIGIN_DIR = "origin"

/** The recipe's directories, absolute: `model.from` and the `hf` tokenizer's (its `dir`, else `model.from`). */
export interface Dirs {
  readonly from: string | undefined
  readonly tokenizer: string | undefined
}

const absolute = (p: string, base: string) => (isAbsolute(p) ? p : resolve(base, p))

/** Where `model.from` and an `hf` tokenizer are; relative paths resolve from `recipeDir`. */
export const dirs = (recipe: Recipe.Recipe, recipeDir: string, source: string): Effect.Effect<Dirs, CoreConfig.ConfigError> => {
  // An empty `from` is a recipe's placeholder (r1-zero-hf runs any directory the user names).
  if (recipe.model.from === "") return Effect.fail(new CoreConfig.ConfigError({ source, problems: ["model.from: empty: set model.from=<dir>, a Hugging Face model directory (config.json, model.safetensors or its index and shards, tokenizer.json)"] }))
  const from = recipe.model.from === undefined ? undefined : absolute(recipe.model.from, recipeDir)
  if (recipe.tokenizer.kind !== "hf") return Effect.succeed({ from, tokenizer: undefined })
  const dir = recipe.tokenizer.dir === undefined ? from : absolute(recipe.tokenizer.dir, recipeDir)
  if (dir === undefined) return Effect.fail(new CoreConfig.ConfigError({ source, problems: ["tokenizer.dir: missing (the directory of tokenizer.json; it defaults to model.from, which is not set)"] }))
  return Effect.succeed({ from, tokenizer: dir })
}

/**
 * Checks `model.from` before any work: config.json and every shard's header (no weight is read), each
 * tensor's presence, dtype and shape, and every shape key the recipe gives against config.json's (a
 * mismatch names the key and both values). `model.maxSeqLen` caps the context (at most the file's).
 */
export const inspect = (recipe: Recipe.Recipe, from: string): Effect.Effect<Checkpoint.Inspected, ModelSourceError> =>
  Effect.gen(function*() {
    const inspected = yield* Checkpoint.inspect(from, recipe.model.maxSeqLen !== undefined ? { maxSeqLen: recipe.model.maxSeqLen } : {}).pipe(Effect.mapError(fromCheckpoint))
    const file = join(from, Checkpoint.CONFIG_FILE)
    for (const key of Object.keys(Recipe.shapeKeys) as Array<keyof typeof Recipe.shapeKeys>) {
      const mine = recipe.model[key], theirs = inspected.config[key]
      if (mine === undefined || mine === theirs) continue
      const hfKey = Recipe.shapeKeys[key]
      return yield* new ModelSourceError({ file, key: hfKey, message: `${file}: key ${hfKey}: the recipe's model.${key} is ${JSON.stringify(mine)} but config.json's ${hfKey} is ${JSON.stringify(theirs)} (leave model.${key} out to take the file's)` })
    }
    return inspected
  })

/** Checks an r1flow checkpoint (`model.checkpoint`) the same way, without the recipe's shape keys (it sets the shape). */
export const inspectCheckpoint = (dir: string): Effect.Effect<Checkpoint.Inspected, ModelSourceError> => Checkpoint.inspect(dir).pipe(Effect.mapError(fromCheckpoint))

/**
 * The checkpoint's embedding rows must cover every id the tokenizer can write (`vocab_size` ≥ its id
 * space; more is fine: Qwen pads its table to a multiple of 128).
 */
export const checkVocab = (checkpointDir: string, inspected: Checkpoint.Inspected, tokenizer: Codec, tokenizerDir: string | undefined): Effect.Effect<void, ModelSourceError> => {
  const n = inspected.config.vocabSize
  if (n >= tokenizer.vocabSize) return Effect.void
  const file = join(checkpointDir, Checkpoint.CONFIG_FILE)
  const theirs = tokenizerDir === undefined
    ? `the run's tokenizer ${tokenizer.name}'s id space`
    : `${join(tokenizerDir, "tokenizer.json")}'s id space (keys model.vocab and added_tokens)`
  return Effect.fail(new ModelSourceError({
    file,
    key: "vocab_size",
    message: `${file}: key vocab_size: ${n} is smaller than ${theirs}, ${tokenizer.vocabSize} ids (highest ${tokenizer.vocabSize - 1}): the checkpoint has no embedding row for ids the tokenizer writes`
  }))
}

/**
 * The folder of the r1flow run an `model.checkpoint` came from (`<run>/checkpoints/<step>/policy`, or any folder
 * below a run's): the nearest parent that holds both `checkpoints/` and the run's `tokenizer/`. `undefined` when
 * the checkpoint is not inside a run folder.
 */
const runOfCheckpoint = (checkpointDir: string): string | undefined => {
  for (let dir = resolve(checkpointDir), up = 0; up < 4; dir = dirname(dir), up++) {
    if (existsSync(join(dir, "checkpoints")) && existsSync(join(dir, "tokenizer"))) return dir
    if (dirname(dir) === dir) break
  }
  return undefined
}

/**
 * A compact tokenizer is learned from a run's data, so a run started from another run's checkpoint must read that
 * run's vocabulary: one learned anew from this recipe's data (other tasks, no cold-start stage) gives the same ids
 * other meanings, silently. The checkpoint's run folder's `tokenizer/`, or a refusal naming why there is none.
 */
export const checkpointVocabDir = (checkpointDir: string): Effect.Effect<string, ModelSourceError> => {
  const run = runOfCheckpoint(checkpointDir)
  return run !== undefined
    ? Effect.succeed(join(run, "tokenizer"))
    : Effect.fail(new ModelSourceError({
      file: checkpointDir,
      key: "model.checkpoint",
      message: `${checkpointDir}: key model.checkpoint: not inside an r1flow run folder (no parent holds checkpoints/ and tokenizer/), so the compact vocabulary its embedding rows were trained on cannot be found; a vocabulary learned anew from this recipe's data would give its ids other meanings. Start from a checkpoint inside its run folder, or use tokenizer.kind "standard" or "hf"`
    }))
}

/** `template: "model"` renders prompts with the tokenizer's chat template: refused when `tokenizer_config.json` has none. */
export const checkTemplate = (recipe: Recipe.Recipe, tokenizer: Codec, tokenizerDir: string | undefined): Effect.Effect<void, ModelSourceError> => {
  if (recipe.template !== "model" || tokenizer.chat !== undefined) return Effect.void
  const file = tokenizerDir === undefined ? `tokenizer ${tokenizer.name}` : join(tokenizerDir, "tokenizer_config.json")
  const why = tokenizerDir === undefined ? `is r1flow's own (tokenizer.kind ${recipe.tokenizer.kind}) and has no chat template: template "model" needs tokenizer.kind "hf"` : `has no chat_template, which template "model" renders prompts with`
  return Effect.fail(new ModelSourceError({ file, key: "chat_template", message: `${file}: key chat_template: ${why}` }))
}

/** A Hugging Face tokenizer from `dir` (not scoped: the caller frees it). */
export const loadTokenizer = (dir: string): Effect.Effect<HfTokenizer.HfCodec, ModelSourceError> =>
  Effect.flatMap(HfTokenizer.read(dir).pipe(Effect.mapError(fromTokenizer)), (files) =>
    Effect.try({
      try: () => HfTokenizer.make(files),
      catch: (e) =>
        e instanceof HfTokenizer.HfTokenizerError
          ? fromTokenizer(e)
          : new ModelSourceError({ file: files.tokenizerFile, message: `${files.tokenizerFile}: ${e instanceof Error ? e.message : String(e)}` })
    }))

const copy = (from: string, to: string, names: ReadonlyArray<string>): Effect.Effect<Array<string>, ModelSourceError> =>
  Effect.try({
    try: () => {
      mkdirSync(to, { recursive: true })
      const found = names.filter((f) => existsSync(join(from, f)))
      for (const f of found) copyFileSync(join(from, f), join(to, f))
      return found
    },
    catch: (e) => new ModelSourceError({ file: to, message: `${to}: cannot copy ${from}'s files: ${(e as Error).message}` })
  })

/** Copies the tokenizer files of `from` into `<run>/tokenizer`, so that resume and export read them there. */
export const keepTokenizer = (from: string, runRoot: string) => copy(from, join(runRoot, TOKENIZER_DIR), Checkpoint.TOKENIZER_FILES)

/** Copies the source's config.json and generation_config.json into `<run>/origin`, for export. */
export const keepOrigin = (origin: Checkpoint.Origin, runRoot: string) =>
  copy(origin.dir, join(runRoot, ORIGIN_DIR), [Checkpoint.CONFIG_FILE, Checkpoint.GENERATION_CONFIG_FILE])

/** What the manifest records of a model that came from `model.from` (`manifest.model`). */
export interface Recorded {
  readonly from: string
  readonly family: HfConfig.Family
  readonly dtype: Checkpoint.TorchDtype
}

/** The origin a run kept (`<run>/origin` + `manifest.model`), or undefined for a run that did not start from `model.from`. */
export const keptOrigin = (runRoot: string, manifest: Record<string, unknown>): Effect.Effect<Checkpoint.Origin | undefined, ModelSourceError> => {
  const recorded = manifest.model as Partial<Recorded> | undefined
  if (recorded?.family === undefined || recorded.dtype === undefined) return Effect.succeed(undefined)
  const dir = join(runRoot, ORIGIN_DIR), file = join(dir, Checkpoint.CONFIG_FILE)
  const { family, dtype } = recorded
  return Effect.try({
    try: () => ({ dir, family, dtype, hfConfig: JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown> }),
    catch: (e) => new ModelSourceError({ file, message: `${file}: the run's copy of the source config.json cannot be read: ${(e as Error).message}` })
  })
}
