/**
 * Checkpoints of a run: everything it needs to continue as if it had never stopped.
 *
 *   checkpoints/step-000120/
 *     policy/model.safetensors, policy/config.json   the policy (Hugging Face names)
 *     reference/…                                    the frozen reference, when the stage holds one (β > 0)
 *     trainer.safetensors                            AdamW moments m/<weight>, v/<weight>
 *     state.json                                     step, stage progress and data cursor, every RNG stream,
 *                                                    optimizer step, trainer counters, guard, metrics so far
 *     checksums.json                                 sha256 of every file above
 *   checkpoints/latest                               the name of the newest complete checkpoint
 *
 * Writing: into `step-N.tmp/`, every file fsynced, the folder renamed, then `latest` replaced the same
 * way; older checkpoints beyond `keep` are removed. Reading refuses, before touching the run, any
 * checkpoint whose files are missing, truncated or altered (checksums), or that was made under another
 * config or model shape.
 *
 * Test hook: `R1FLOW_TEST_KILL_AT_CHECKPOINT=<n>` makes the process SIGKILL itself while writing its
 * n-th checkpoint, once the files are in `step-N.tmp/` and before the rename that would make it
 * count: a crash at a known point, with the steps since the last checkpoint done (their metrics and
 * rollouts written) but not saved. The resume test uses it; a run never sets it.
 */
import { Metrics, Rng } from "@r1flow/core"
import type { Train } from "@r1flow/grpo"
import { Checkpoint, Safetensors, Transformer } from "@r1flow/model"
import { Effect, Schema } from "effect"
import { createHash } from "node:crypto"
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs"
import { join, relative } from "node:path"
import type { Progress, RunContext } from "./Context.js"
import * as RunDir from "./RunDir.js"

/** A checkpoint could not be written, or cannot be used. */
export class CheckpointError extends Schema.TaggedError<CheckpointError>()("RunCheckpointError", {
  path: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.path}: ${this.reason}`
  }
}

/** What a stage hands over to be saved with the run's state. */
export interface StageState {
  readonly trainer: Train.TrainerState
  readonly reference: Transformer.Model | null
}

/** The JSON part of a checkpoint. */
export interface State {
  readonly format: "r1flow-checkpoint"
  readonly version: 1
  readonly recipeHash: string
  readonly progress: Progress
  readonly rng: Rng.Snapshot
  readonly trainer: Omit<Train.TrainerState, "optimizer"> & { readonly optimizerStep: number; readonly names: ReadonlyArray<string> } | null
  readonly metrics: ReadonlyArray<Metrics.Entry>
}

/** A checkpoint read back, verified. */
export interface Restored {
  readonly name: string
  readonly state: State
  readonly policy: Transformer.Model
  readonly reference: Transformer.Model | null
  readonly trainer: Train.TrainerState | null
}

/** The hash that ties a checkpoint to the resolved config it was made under. */
export const hashConfig = (resolved: unknown): string => createHash("sha256").update(JSON.stringify(resolved)).digest("hex")

const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex")

const filesUnder = (dir: string): Array<string> =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(join(dir, e.name)) : [join(dir, e.name)]))

const fail = (path: string) => (e: unknown) => new CheckpointError({ path, reason: e instanceof Error ? e.message : (e as { message?: string }).message ?? String(e) })

let checkpointWrites = 0

/** The test hook above: SIGKILL is delivered before `kill` returns, so nothing after it runs. */
const killForTest = () => {
  checkpointWrites++
  if (process.env.R1FLOW_TEST_KILL_AT_CHECKPOINT === String(checkpointWrites)) process.kill(process.pid, "SIGKILL")
}

/** The checkpoint folder name of a global step. */
export const nameOf = (step: number) => `step-${String(step).padStart(6, "0")}`

/** Saves the run's state (and `stage`'s trainer, when given) as checkpoint `step-N`, keeping the newest `keep`. */
export const save = (ctx: RunContext, recipeHash: string, stage: StageState | null, keep: number): Effect.Effect<string, CheckpointError> =>
  Effect.gen(function*() {
    const name = nameOf(ctx.progress.step)
    const final = join(ctx.dir.checkpoints, name)
    const tmp = `${final}.tmp`
    yield* Effect.try({ try: () => { rmSync(tmp, { recursive: true, force: true }); mkdirSync(tmp, { recursive: true }) }, catch: fail(tmp) })
    yield* Checkpoint.save(join(tmp, "policy"), ctx.policy).pipe(Effect.mapError(fail(join(tmp, "policy"))))
    if (stage?.reference) yield* Checkpoint.save(join(tmp, "reference"), stage.reference).pipe(Effect.mapError(fail(join(tmp, "reference"))))
    if (stage !== null) {
      const tensors: Record<string, Safetensors.Entry> = {}
      stage.trainer.optimizer.names.forEach((n, i) => {
        tensors[`m/${n}`] = { dtype: "F32", shape: [stage.trainer.optimizer.m[i].length], data: stage.trainer.optimizer.m[i] }
        tensors[`v/${n}`] = { dtype: "F32", shape: [stage.trainer.optimizer.v[i].length], data: stage.trainer.optimizer.v[i] }
      })
      yield* Safetensors.write(join(tmp, "trainer.safetensors"), tensors).pipe(Effect.mapError(fail(join(tmp, "trainer.safetensors"))))
    }
    const state: State = {
      format: "r1flow-checkpoint",
      version: 1,
      recipeHash,
      progress: { ...ctx.progress },
      rng: ctx.rng.snapshot(),
      trainer: stage === null ? null : {
        steps: stage.trainer.steps,
        updates: stage.trainer.updates,
        guard: stage.trainer.guard,
        optimizerStep: stage.trainer.optimizer.step,
        names: stage.trainer.optimizer.names
      },
      metrics: ctx.metrics.history()
    }
    yield* RunDir.write(join(tmp, "state.json"), JSON.stringify(state)).pipe(Effect.mapError(fail(join(tmp, "state.json"))))
    yield* Effect.try({
      try: () => {
        const sums = Object.fromEntries(filesUnder(tmp).map((f) => [relative(tmp, f), sha256(f)]))
        RunDir.writeAtomic(join(tmp, "checksums.json"), JSON.stringify(sums, null, 1))
        for (const d of [tmp, join(tmp, "policy"), join(tmp, "reference")]) if (existsSync(d)) RunDir.fsyncDir(d)
        killForTest()
        rmSync(final, { recursive: true, force: true })
        renameSync(tmp, final)
        RunDir.fsyncDir(ctx.dir.checkpoints)
        RunDir.writeAtomic(join(ctx.dir.checkpoints, "latest"), name + "\n")
        const all = readdirSync(ctx.dir.checkpoints).filter((f) => /^step-\d+$/.test(f)).sort()
        for (const old of all.slice(0, Math.max(0, all.length - keep))) rmSync(join(ctx.dir.checkpoints, old), { recursive: true, force: true })
      },
      catch: fail(final)
    })
    return final
  })

/** The newest complete checkpoint's folder, from `latest`. */
export const latest = (checkpoints: string): Effect.Effect<string, CheckpointError> =>
  Effect.try({
    try: () => {
      const pointer = join(checkpoints, "latest")
      if (!existsSync(pointer)) throw new Error("no checkpoint was written (checkpoints/latest is missing)")
      const name = readFileSync(pointer, "utf8").trim()
      if (!/^step-\d+$/.test(name)) throw new Error(`checkpoints/latest names "${name}", not a checkpoint`)
      const dir = join(checkpoints, name)
      if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`checkpoints/latest names ${name}, which does not exist`)
      return dir
    },
    catch: fail(checkpoints)
  })

/** Verifies a checkpoint's checksums, then reads it. Nothing of the run is touched. */
export const load = (dir: string, expected: { readonly recipeHash: string }): Effect.Effect<Restored, CheckpointError> =>
  Effect.gen(function*() {
    const sums = yield* Effect.try({
      try: () => JSON.parse(readFileSync(join(dir, "checksums.json"), "utf8")) as Record<string, string>,
      catch: () => new CheckpointError({ path: join(dir, "checksums.json"), reason: "missing or unreadable: the checkpoint is incomplete" })
    })
    for (const [file, sum] of Object.entries(sums)) {
      const path = join(dir, file)
      if (!existsSync(path)) return yield* new CheckpointError({ path, reason: "listed in checksums.json but missing" })
      if (sha256(path) !== sum) return yield* new CheckpointError({ path, reason: "checksum mismatch: the file is truncated or corrupt" })
    }
    for (const required of ["state.json", "policy/model.safetensors", "policy/config.json"]) {
      if (!(required in sums)) return yield* new CheckpointError({ path: join(dir, required), reason: "missing from the checkpoint" })
    }
    const state = JSON.parse(readFileSync(join(dir, "state.json"), "utf8")) as State
    if (state.format !== "r1flow-checkpoint" || state.version !== 1) {
      return yield* new CheckpointError({ path: join(dir, "state.json"), reason: `not an r1flow checkpoint (format ${String(state.format)} version ${String(state.version)})` })
    }
    if (state.recipeHash !== expected.recipeHash) {
      return yield* new CheckpointError({ path: dir, reason: "the checkpoint was made under a different config than this run's manifest; refusing to mix them" })
    }
    const policy = yield* Checkpoint.load(join(dir, "policy")).pipe(Effect.mapError(fail(join(dir, "policy"))))
    const reference = "reference/model.safetensors" in sums ? yield* Checkpoint.load(join(dir, "reference")).pipe(Effect.mapError(fail(join(dir, "reference")))) : null
    let trainer: Train.TrainerState | null = null
    if (state.trainer !== null) {
      const { tensors } = yield* Safetensors.read(join(dir, "trainer.safetensors")).pipe(Effect.mapError(fail(join(dir, "trainer.safetensors"))))
      const m: Array<Float32Array> = [], v: Array<Float32Array> = []
      for (const n of state.trainer.names) {
        const a = tensors[`m/${n}`], b = tensors[`v/${n}`]
        if (a === undefined || b === undefined) return yield* new CheckpointError({ path: join(dir, "trainer.safetensors"), reason: `optimizer moments of ${n} are missing` })
        m.push(a.data as Float32Array)
        v.push(b.data as Float32Array)
      }
      trainer = {
        optimizer: { step: state.trainer.optimizerStep, names: state.trainer.names, m, v },
        steps: state.trainer.steps,
        updates: state.trainer.updates,
        guard: state.trainer.guard
      }
    }
    return { name: relative(join(dir, ".."), dir), state, policy, reference, trainer }
  })
