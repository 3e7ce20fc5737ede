import { Effect } from "effect"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

/** Runs an effect to its value. */
export const run = <A, E>(effect: Effect.Effect<A, E>): Promise<A> => Effect.runPromise(effect)
/** Runs an effect that must fail and returns its error. */
export const runFail = <A, E>(effect: Effect.Effect<A, E>): Promise<E> => Effect.runPromise(Effect.flip(effect))

/** A fresh temporary folder. */
export const tempDir = (prefix: string) => mkdtempSync(join(tmpdir(), `r1flow-${prefix}-`))

/** A recipe as the tests read it from its JSON: the keys `tinyOverrides` looks at. */
interface RecipeShape {
  readonly task?: { readonly kind?: string; readonly tasks?: ReadonlyArray<unknown> }
  readonly stages: ReadonlyArray<{ readonly stage: string; readonly config?: unknown }>
}

const isColdStart = (s: RecipeShape["stages"][number]) => s.stage === "sft" && (s.config as { source?: { kind?: string } } | undefined)?.source?.kind === "cold-start"

/**
 * `--set` overrides that shrink a built-in recipe to test size (seconds): tiny data (per task in a
 * mixture), a tiny model, two steps per stage, short generations. Stage-specific keys only where the
 * stage has them; a cold-start SFT keeps 8 chains and the context they need.
 */
export const tinyOverrides = (recipe: RecipeShape, runsDir: string): Array<string> => {
  const tasks = recipe.task?.kind === "mixture" ? (recipe.task.tasks ?? []).map((_, i) => `task.tasks.${i}.task`) : ["task"]
  const sets = [
    `runsDir=${runsDir}`,
    ...tasks.flatMap((t) => [`${t}.train=${48 / tasks.length}`, `${t}.test=${4 / tasks.length}`]),
    "corpus.count=48",
    "tokenizer.size=512",
    "model.dModel=16",
    "model.nLayers=1",
    "model.nHeads=2",
    "model.nKvHeads=1",
    "model.dFf=32",
    `model.maxSeqLen=${recipe.stages.some(isColdStart) ? 768 : 128}`,
    "checkpoint.every=1"
  ]
  recipe.stages.forEach((s, i) => {
    const c = `stages.${i}.config`
    if (["pretrain", "sft", "grpo", "reward-model"].includes(s.stage)) sets.push(`${c}.steps=2`)
    if (["pretrain", "sft", "reward-model"].includes(s.stage)) sets.push(`${c}.batchSize=4`)
    if (isColdStart(s)) sets.push(`${c}.source.limit=8`)
    if (s.stage === "grpo") sets.push(`${c}.promptsPerStep=2`, `${c}.groupSize=2`, `${c}.sampling.maxNewTokens=6`, `${c}.evalEvery=0`)
    if (s.stage === "eval") sets.push(`${c}.samples=2`, `${c}.sampling.maxNewTokens=6`)
    if (s.stage === "rejection-sampling") {
      sets.push(`${c}.prompts=4`, `${c}.samples=2`, `${c}.sampling.maxNewTokens=6`, `${c}.requireStop=false`, `${c}.thresholds={"accuracy":0,"countdown":0,"format":0,"language":0}`)
    }
    if (s.stage === "student") sets.push(`${c}.model={"dModel":8,"nLayers":1,"nHeads":2,"nKvHeads":1,"dFf":16,"maxSeqLen":128}`)
  })
  return sets
}
