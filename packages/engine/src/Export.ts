/**
 * `r1flow export`: a run's policy (its latest checkpoint, or a checkpoint folder `…/checkpoints/step-N`)
 * as a Hugging Face model directory (`Checkpoint.exportHf`): config.json of the family the model came
 * from (`model.from`, kept in `<run>/origin`), safetensors sharded above a size limit with the index,
 * generation_config.json with the tokenizer's bos / eos / pad ids, and the tokenizer files when the run
 * used a Hugging Face tokenizer (the copies in `<run>/tokenizer`). r1flow's own compact and standard
 * tokenizers have no Hugging Face files: the export says so and writes none. A LoRA run's policy is
 * exported merged (W + (α/r)·A·B), or with `adapter` as a PEFT adapter directory naming its base.
 *
 * Reads only: the checkpoint is verified (checksums, config) and nothing of the run is changed, so it is
 * safe while the run trains.
 */
import { Checkpoint, Lora, type Transformer } from "@r1flow/model"
import type { Config as CoreConfig } from "@r1flow/core"
import type { Codec, Compact, HfTokenizer } from "@r1flow/tokenizer"
import { Effect } from "effect"
import { existsSync, readFileSync } from "node:fs"
import { isAbsolute, join } from "node:path"
import * as LoraBase from "./LoraBase.js"
import * as ModelSource from "./ModelSource.js"
import * as Run from "./Run.js"
import * as RunCheckpoint from "./RunCheckpoint.js"
import type * as RunDir from "./RunDir.js"

/** How to export. */
export interface Options {
  /** Stored dtype (default: the source model's when it came from `model.from`, else float32). */
  readonly dtype?: Checkpoint.TorchDtype
  /** Shard above this size: bytes or "5GB", "500MB", "2GiB" (default "5GB"). */
  readonly maxShardSize?: string | number
  /** A LoRA run only: write its adapters as a PEFT adapter directory instead of the merged model. */
  readonly adapter?: boolean
  readonly log?: (line: string) => void
}

/** What was exported, and from where. */
export interface Result {
  /** The model directory written; none for a PEFT adapter export. */
  readonly exported: Checkpoint.Exported | null
  /** The checkpoint folder the weights came from. */
  readonly checkpoint: string
  /** The tokenizer files written, or why none were. */
  readonly tokenizer: string
}

/** `tokenizer_config.json`'s `bos_token` (a string or `{ content }`) as an id of `codec`, if it has one. */
const bosOf = (tokenizerDir: string, codec: Codec): number | undefined => {
  const file = join(tokenizerDir, "tokenizer_config.json")
  if (!existsSync(file)) return undefined
  const bos = (JSON.parse(readFileSync(file, "utf8")) as { bos_token?: unknown }).bos_token
  const text = typeof bos === "string" ? bos : typeof bos === "object" && bos !== null ? (bos as { content?: unknown }).content : undefined
  return typeof text === "string" ? codec.specialTokens[text] : undefined
}

/** Why an export failed: the run folder, its recipe, its checkpoint, its tokenizer or the model files. */
export type ExportError =
  | RunDir.RunDirError
  | CoreConfig.ConfigError
  | RunCheckpoint.CheckpointError
  | Compact.CompactVocabError
  | ModelSource.ModelSourceError
  | Checkpoint.CheckpointError

/** `--adapter`: the checkpoint's LoRA adapters as a PEFT adapter directory, named after the base they need. */
const adapterOnly = (from: string, out: string, model: Transformer.Model, log: (line: string) => void) =>
  Effect.gen(function*() {
    if (model.lora === undefined) {
      return yield* new RunCheckpoint.CheckpointError({ path: from, reason: "the run trained every weight (no model.lora): it has no adapters; export without --adapter for the model" })
    }
    const record = yield* LoraBase.read(join(from, "policy", LoraBase.FILE)).pipe(Effect.mapError((e) => new RunCheckpoint.CheckpointError({ path: e.path, reason: e.message })))
    const base = isAbsolute(record.dir) ? record.dir : join(from, "..", "..", record.dir)
    yield* Lora.savePeft(out, model, { baseModel: base }).pipe(Effect.mapError(ModelSource.fromCheckpoint))
    log(`exported ${from} → ${out}: LoRA adapters (PEFT: ${Lora.CONFIG_FILE}, ${Lora.WEIGHTS_FILE}), r ${model.lora.rank}, α ${model.lora.alpha}, ${model.lora.targets.length} targets, on the base ${base}`)
    return { exported: null, checkpoint: from, tokenizer: "no tokenizer files written with an adapter (the base's are used)" } satisfies Result
  })

/** Writes `out` from the run or checkpoint folder `target`. */
export const run = (target: string, out: string, options: Options = {}): Effect.Effect<Result, ExportError> =>
  Effect.gen(function*() {
    const log = options.log ?? ((line: string) => console.log(line))
    const { dir, manifest, recipe, checkpoint } = yield* Run.openTarget(target, log)
    const from = yield* checkpoint
    const root = dir.root
    yield* RunCheckpoint.inspect(from, { recipeHash: RunCheckpoint.hashConfig(manifest.recipe) })
    const origin = yield* ModelSource.keptOrigin(root, manifest)
    const hf = recipe.tokenizer.kind === "hf"
    const tokenizerDir = join(root, ModelSource.TOKENIZER_DIR)
    const ids = yield* Effect.scoped(Effect.gen(function*() {
      const codec: Codec = yield* Effect.acquireRelease(Run.loadTokenizer(recipe, dir), (c) => Effect.sync(() => c.free()))
      const stops = [...codec.stopIds]
      const bos = hf ? bosOf(tokenizerDir, codec) : undefined
      return { eos: stops.length === 1 ? stops[0] : stops, pad: codec.specialIds.pad, bos, name: codec.name, engine: (codec as Partial<HfTokenizer.HfCodec>).engine }
    }))
    const model = yield* Effect.acquireRelease(RunCheckpoint.loadPolicy(from), (m) => Effect.sync(() => m.dispose()))
    if (options.adapter === true) return yield* adapterOnly(from, out, model, log)
    if (model.lora !== undefined) log(`merging the LoRA adapters (r ${model.lora.rank}, α ${model.lora.alpha}) into the base: W + (α/r)·A·B`)
    const exported = yield* Checkpoint.exportHf(out, model, {
      ...(origin !== undefined ? { origin } : {}),
      ...(options.dtype !== undefined ? { dtype: options.dtype } : {}),
      ...(options.maxShardSize !== undefined ? { maxShardSize: options.maxShardSize } : {}),
      eosTokenId: ids.eos,
      padTokenId: ids.pad,
      ...(ids.bos !== undefined ? { bosTokenId: ids.bos } : {}),
      ...(hf ? { tokenizerDir } : {})
    }).pipe(Effect.mapError(ModelSource.fromCheckpoint))
    const tokenizer = hf
      ? `tokenizer files copied from ${tokenizerDir} (${ids.name}, ${ids.engine ?? "tiktoken"})`
      : `no Hugging Face tokenizer files written: the run's tokenizer ${ids.name} is r1flow's own (tokenizer.kind ${recipe.tokenizer.kind}), which has none; generation_config.json has its ids`
    log(`exported ${from} → ${out}: ${exported.family}, ${exported.dtype}, ${exported.shards.length} weight file${exported.shards.length === 1 ? "" : "s"} (${(exported.totalSize / 1e6).toFixed(1)} MB)`)
    log(tokenizer)
    return { exported, checkpoint: from, tokenizer } satisfies Result
  }).pipe(Effect.scoped)

