/**
 * The frozen base of a LoRA run (`model.lora`) and what ties a checkpoint's adapters to it. A LoRA
 * checkpoint holds only the adapters (a PEFT adapter directory) and `base.json`: where the base model
 * directory is and the sha256 of each of its files, so that a resume, eval or export puts the adapters
 * back on exactly the weights they were trained on, or refuses, naming the file that changed.
 *
 *   <run>/lora-base.json                  the record, written once when the run starts
 *   <run>/base/                           the base itself when the run initialised it (no `model.from`)
 *   checkpoints/step-N/policy/            adapter_config.json, adapter_model.safetensors, base.json
 *
 * A `model.from` base stays where it is (a 1.5B model is not copied into every run): it must still be
 * there, unchanged, when the run resumes.
 */
import { Checkpoint, Lora, type Transformer } from "@r1flow/model"

type CheckpointError = Checkpoint.CheckpointError
const CheckpointError = Checkpoint.CheckpointError
import { Effect, Schema } from "effect"
import { existsSync, readdirSync } from "node:fs"
import { isAbsolute, join, relative, resolve } from "node:path"
import * as RunDir from "./RunDir.js"

/** The record's file name, in the run root and in each LoRA checkpoint's `policy/`. */
export const FILE = "base.json"
/** Where the run keeps the record. */
export const RUN_FILE = "lora-base.json"
/** Where the run keeps a base it initialised itself. */
export const RUN_BASE_DIR = "base"

/** Where the base is (absolute, or relative to the run root) and the sha256 of its config and weight files. */
export const Record = Schema.Struct({
  dir: Schema.String,
  files: Schema.Record(Schema.String, Schema.String),
  maxSeqLen: Schema.optionalKey(Schema.Int)
})
/** The base record. */
export type Record = typeof Record.Type

const sha256 = (file: string): Effect.Effect<string, CheckpointError> =>
  Effect.try({ try: () => RunDir.sha256File(file), catch: (e) => new CheckpointError({ path: file, message: `cannot read the LoRA base: ${(e as Error).message}` }) })

/** The files that fix a model directory's weights: config.json and the safetensors (and their index). */
const weightFiles = (dir: string): Array<string> =>
  readdirSync(dir).filter((f) => f === Checkpoint.CONFIG_FILE || f.endsWith(".safetensors") || f === Checkpoint.INDEX_FILE).sort()

/** The record of the base directory `dir` (hashed now), stored relative to `runRoot` when inside it. */
export const make = (dir: string, runRoot: string, maxSeqLen: number | undefined): Effect.Effect<Record, CheckpointError> =>
  Effect.gen(function*() {
    const files: { [name: string]: string } = {}
    for (const f of yield* Effect.try({ try: () => weightFiles(dir), catch: (e) => new CheckpointError({ path: dir, message: `cannot list the LoRA base: ${(e as Error).message}` }) })) {
      files[f] = yield* sha256(join(dir, f))
    }
    const rel = relative(runRoot, dir)
    return { dir: rel.startsWith("..") || isAbsolute(rel) ? resolve(dir) : rel, files, ...(maxSeqLen !== undefined ? { maxSeqLen } : {}) }
  })

/**
 * At the start of a LoRA run: the base's record, written to `<run>/lora-base.json`. A base the run made
 * itself (`from` undefined) is first written to `<run>/base/`.
 */
export const start = (runRoot: string, policy: Transformer.Model, from: string | undefined, maxSeqLen: number | undefined): Effect.Effect<Record, CheckpointError> =>
  Effect.gen(function*() {
    const dir = from ?? join(runRoot, RUN_BASE_DIR)
    if (from === undefined) yield* Checkpoint.save(dir, Lora.disabled(policy))
    const record = yield* make(dir, runRoot, maxSeqLen)
    yield* write(join(runRoot, RUN_FILE), record)
    return record
  })

/** Writes a record as JSON, atomically. */
export const write = (file: string, record: Record): Effect.Effect<void, CheckpointError> =>
  RunDir.write(file, JSON.stringify(record, null, 2) + "\n").pipe(Effect.mapError((e) => new CheckpointError({ path: file, message: e.message })))

/** Reads and checks a record file. */
export const read = (file: string): Effect.Effect<Record, CheckpointError> =>
  Effect.gen(function*() {
    const raw = yield* RunDir.readJson(file).pipe(Effect.mapError((e) => new CheckpointError({ path: file, message: e.message })))
    return yield* Schema.decodeUnknownEffect(Record)(raw).pipe(Effect.mapError((e) => new CheckpointError({ path: file, message: `not a LoRA base record: ${e.message}` })))
  })

/** Whether a checkpoint's `policy/` holds LoRA adapters rather than a whole model. */
export const isLora = (policyDir: string): boolean => existsSync(join(policyDir, Lora.CONFIG_FILE))

/**
 * The policy of a LoRA checkpoint: the base of `policy/base.json` (its files checked against the
 * record first), the adapters of `policy/` on it. `runRoot` resolves a relative base directory.
 */
export const load = (policyDir: string, runRoot: string): Effect.Effect<Transformer.Model, CheckpointError> =>
  Effect.gen(function*() {
    const record = yield* read(join(policyDir, FILE))
    const dir = isAbsolute(record.dir) ? record.dir : join(runRoot, record.dir)
    for (const [f, sum] of Object.entries(record.files)) {
      const file = join(dir, f)
      if (!existsSync(file)) return yield* new CheckpointError({ path: file, message: `the LoRA base model file is missing (the adapters in ${policyDir} were trained on it)` })
      if ((yield* sha256(file)) !== sum) return yield* new CheckpointError({ path: file, message: `the LoRA base model changed since the run started (sha256 differs from ${join(policyDir, FILE)}): the adapters only hold on the weights they were trained on` })
    }
    const extra = weightFiles(dir).filter((f) => !(f in record.files))
    if (extra.length > 0) return yield* new CheckpointError({ path: join(dir, extra[0]), message: "the LoRA base model directory has a weight file it did not have when the run started" })
    const base = yield* Checkpoint.loadHf(dir, record.maxSeqLen !== undefined ? { maxSeqLen: record.maxSeqLen, trainable: false } : { trainable: false })
    return yield* Lora.loadPeft(policyDir, base.model).pipe(Effect.tapError(() => Effect.sync(() => base.model.dispose())))
  })

/** Saves a LoRA policy into a checkpoint's `policy/`: its adapters (PEFT) and the run's base record. */
export const save = (policyDir: string, policy: Transformer.Model, runRoot: string): Effect.Effect<void, CheckpointError> =>
  Effect.gen(function*() {
    const record = yield* read(join(runRoot, RUN_FILE))
    yield* Lora.savePeft(policyDir, policy)
    yield* write(join(policyDir, FILE), record)
  })
