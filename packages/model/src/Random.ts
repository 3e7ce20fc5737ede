/**
 * Random Hugging Face model directories: a `config.json` object in, a loadable model directory out, with
 * seeded random weights (`Transformer.init`: N(0, 0.02²) matrices, unit norms, zero biases). For tests that
 * need a model on disk and for benchmarks at real model sizes without downloading weights.
 *
 * The config is parsed as `Checkpoint.loadHf` would (`HfConfig.parse`), so a config the forward cannot
 * reproduce is refused with its key before anything is written; it is then written back with its own keys
 * kept (it is the export's origin), so the directory's `config.json` is the given object plus
 * `torch_dtype`.
 */
import { Rng } from "@r1flow/core"
import { Effect } from "effect"
import path from "node:path"
import * as Checkpoint from "./Checkpoint.js"
import * as HfConfig from "./HfConfig.js"
import * as Transformer from "./Transformer.js"

/** Options of `write`. */
export interface Options {
  /** Seed of the weights (default 0). */
  readonly seed?: number
  /** Name of the Rng stream (default "model/random"); with `seed`, fixes the weights. */
  readonly stream?: string
  /** Stored dtype (default the config's `torch_dtype` when it is one of ours, else float32). */
  readonly dtype?: Checkpoint.TorchDtype
  /** Shard the weights above this size: bytes or "5GB"-style (default "5GB", as transformers). */
  readonly maxShardSize?: number | string
  /** A directory whose tokenizer files are copied in (default none). */
  readonly tokenizerDir?: string
}

const dtypes: ReadonlyArray<string> = ["float32", "float16", "bfloat16"]

/** Writes a model directory of `hfConfig`'s shape with seeded random weights to `dir`; returns what `exportHf` wrote. */
export const write = Effect.fnUntraced(function*(
  dir: string,
  hfConfig: Readonly<Record<string, unknown>>,
  options: Options = {}
): Effect.fn.Return<Checkpoint.Exported, Checkpoint.CheckpointError> {
  const parsed = HfConfig.parse(hfConfig, path.join(dir, Checkpoint.CONFIG_FILE))
  if (parsed instanceof Error) return yield* parsed
  const given = parsed.torchDtype
  const dtype = options.dtype ?? (given !== undefined && dtypes.includes(given) ? given as Checkpoint.TorchDtype : "float32")
  const rng = Rng.make(options.seed ?? 0, options.stream ?? "model/random")
  return yield* Effect.acquireUseRelease(
    Effect.sync(() => Transformer.init(parsed.config, rng)),
    (model) =>
      Checkpoint.exportHf(dir, model, {
        // The origin is the config itself (there is no source directory), so its keys are written back.
        origin: { dir: path.join(dir, "random"), family: parsed.family, dtype, hfConfig },
        dtype,
        ...(options.maxShardSize !== undefined ? { maxShardSize: options.maxShardSize } : {}),
        ...(options.tokenizerDir !== undefined ? { tokenizerDir: options.tokenizerDir } : {})
      }),
    (model) => Effect.sync(() => model.dispose())
  )
})
