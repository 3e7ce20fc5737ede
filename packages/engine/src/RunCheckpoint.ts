/**
 * Checkpoints of a run: everything it needs to continue as if it had never stopped.
 *
 *   checkpoints/step-000120/
 *     policy/model.safetensors, policy/config.json   the policy (Hugging Face names); under LoRA instead
 *                                                    its adapters (PEFT) and base.json (see `LoraBase`)
 *     reference/…                                    the frozen reference, when the stage holds one (β > 0)
 *     trainer.safetensors                            AdamW moments m/<weight>, v/<weight>
 *     state.json                                     step, stage progress and data cursor, every RNG stream,
 *                                                    optimizer step, trainer counters, guard, metrics so far
 *     checksums.json                                 sha256 of every file above
 *   checkpoints/step-000120.1/                       a re-save of step 120 (after a stage with no steps, e.g. an eval)
 *   checkpoints/latest                               the name of the newest complete checkpoint
 *
 * Writing: into `step-N.tmp/`, every file fsynced, the folder renamed to a name no folder has (`step-N`,
 * or `step-N.1`, `.2`… when step N was saved before), then `latest` replaced the same way; only then are
 * the superseded folder of the step and checkpoints beyond the newest `keep` removed. No folder is ever
 * deleted before its successor is in place and named by `latest`, so a kill at any point leaves `latest`
 * naming a complete checkpoint. Reading refuses, before touching the run, any checkpoint whose files are
 * missing, truncated or altered (checksums), or that was made under another config or model shape; when
 * `latest` is missing or names no folder, the newest complete checkpoint is used, with a notice.
 *
 * Test hook: `R1FLOW_TEST_KILL_AT_CHECKPOINT=<n>[:<point>]` makes the process SIGKILL itself while writing
 * its n-th checkpoint: at `files` (the default) once the files are in `step-N.tmp/` and before the rename
 * that would make it count (the steps since the last checkpoint done, their metrics and rollouts written,
 * but not saved); at `switch` once the new folder has its name and before `latest` names it; at `latest`
 * once `latest`'s temp file is written and before it replaces `latest`. The resume tests use it; a run
 * never sets it.
 */
import { Metrics, Rng } from "@r1flow/core"
import type { Train } from "@r1flow/grpo"
import { Checkpoint, Safetensors, Transformer } from "@r1flow/model"
import { Effect, Schema } from "effect"
import { createHash } from "node:crypto"
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeSync } from "node:fs"
import { join, relative } from "node:path"
import type * as Compute from "./Compute.js"
import type { Progress, RunContext } from "./Context.js"
import * as LoraBase from "./LoraBase.js"
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
  /** The maths that made it (absent in checkpoints from before it was recorded). */
  readonly compute?: Compute.Compute
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

const sha256 = RunDir.sha256File

const filesUnder = (dir: string): Array<string> =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(join(dir, e.name)) : [join(dir, e.name)]))

const fail = (path: string) => (e: unknown) => new CheckpointError({ path, reason: e instanceof Error ? e.message : (e as { message?: string }).message ?? String(e) })

let checkpointWrites = 0

/** The test hook above: SIGKILL is delivered before `kill` returns, so nothing after it runs. */
const killForTest = (n: number, point: "files" | "switch" | "latest") => {
  const at = process.env.R1FLOW_TEST_KILL_AT_CHECKPOINT
  if (at === `${n}:${point}` || (point === "files" && at === String(n))) process.kill(process.pid, "SIGKILL")
}

/** The checkpoint folder name of a global step (its first save; re-saves add `.1`, `.2`…). */
export const nameOf = (step: number) => `step-${String(step).padStart(6, "0")}`

/** A complete checkpoint's folder name: `step-N` or a re-save `step-N.k`. */
const checkpointName = /^step-(\d+)(?:\.(\d+))?$/

/** The checkpoint folders under `checkpoints`, oldest first (by step, then re-save). */
export const list = (checkpoints: string): Array<string> =>
  (existsSync(checkpoints) ? readdirSync(checkpoints) : [])
    .map((name) => ({ name, m: checkpointName.exec(name) }))
    .filter((c): c is { name: string; m: RegExpExecArray } => c.m !== null)
    .sort((a, b) => Number(a.m[1]) - Number(b.m[1]) || Number(a.m[2] ?? 0) - Number(b.m[2] ?? 0))
    .map((c) => c.name)

const stepOf = (name: string) => Number(checkpointName.exec(name)?.[1] ?? -1)

/** `step-N`, or its first re-save name no folder has: a new checkpoint never lands on an existing one. */
const freshName = (checkpoints: string, step: number): string => {
  const base = nameOf(step)
  if (!existsSync(join(checkpoints, base))) return base
  let k = 1
  while (existsSync(join(checkpoints, `${base}.${k}`))) k++
  return `${base}.${k}`
}

/** Points `latest` at `name`: temp file, fsync, rename, fsync of the folder; temp files of writers that died go first. */
const writeLatest = (checkpoints: string, name: string, n: number) => {
  removeStaleLatest(checkpoints)
  const tmp = join(checkpoints, `latest.tmp-${process.pid}`)
  const fd = openSync(tmp, "w")
  try {
    writeSync(fd, name + "\n")
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  killForTest(n, "latest")
  renameSync(tmp, join(checkpoints, "latest"))
  RunDir.fsyncDir(checkpoints)
}

/**
 * Removes `latest.tmp-<pid>` files left by writers killed while replacing `latest`. Only the run's lock
 * holder writes here, so every one but this process's own is stale.
 */
export const removeStaleLatest = (checkpoints: string): void => {
  for (const f of existsSync(checkpoints) ? readdirSync(checkpoints) : []) {
    if (f.startsWith("latest.tmp-") && f !== `latest.tmp-${process.pid}`) rmSync(join(checkpoints, f), { force: true })
  }
}

/** Once `latest` names `current`: drops the step's superseded saves, then all but the newest `keep`, never `current`. */
const prune = (checkpoints: string, current: string, keep: number) => {
  const all = list(checkpoints)
  const rest = all.filter((c) => c === current || stepOf(c) !== stepOf(current))
  for (const c of all) {
    if (c !== current && (stepOf(c) === stepOf(current) || rest.indexOf(c) < rest.length - keep)) rmSync(join(checkpoints, c), { recursive: true, force: true })
  }
}

/** What a checkpoint saves of a run: its folder, progress and policy, the state of its random streams, its metrics so far. */
export interface Saved extends Pick<RunContext, "dir" | "progress" | "policy"> {
  readonly rng: Rng.Rng["Service"]
  readonly metrics: Metrics.Metrics["Service"]
}

/** Saves the run's state (and `stage`'s trainer, when given) as checkpoint `step-N`, keeping the newest `keep`. */
export const save = (
  ctx: Saved,
  made: { readonly recipeHash: string; readonly compute: Compute.Compute },
  stage: StageState | null,
  keep: number
): Effect.Effect<string, CheckpointError> =>
  Effect.gen(function*() {
    const n = ++checkpointWrites
    const tmp = join(ctx.dir.checkpoints, `${nameOf(ctx.progress.step)}.tmp`)
    yield* Effect.try({ try: () => { rmSync(tmp, { recursive: true, force: true }); mkdirSync(tmp, { recursive: true }) }, catch: fail(tmp) })
    // Under LoRA the policy is its adapters and the base's record; the reference is the base, not saved.
    yield* (ctx.policy.lora !== undefined ? LoraBase.save(join(tmp, "policy"), ctx.policy, ctx.dir.root) : Checkpoint.save(join(tmp, "policy"), ctx.policy)).pipe(Effect.mapError(fail(join(tmp, "policy"))))
    if (stage?.reference && ctx.policy.lora === undefined) yield* Checkpoint.save(join(tmp, "reference"), stage.reference).pipe(Effect.mapError(fail(join(tmp, "reference"))))
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
      recipeHash: made.recipeHash,
      compute: made.compute,
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
    return yield* Effect.try({
      try: () => {
        const sums = Object.fromEntries(filesUnder(tmp).map((f) => [relative(tmp, f), sha256(f)]))
        RunDir.writeAtomic(join(tmp, "checksums.json"), JSON.stringify(sums, null, 1))
        for (const d of [tmp, join(tmp, "policy"), join(tmp, "reference")]) if (existsSync(d)) RunDir.fsyncDir(d)
        killForTest(n, "files")
        const name = freshName(ctx.dir.checkpoints, ctx.progress.step)
        const final = join(ctx.dir.checkpoints, name)
        renameSync(tmp, final)
        RunDir.fsyncDir(ctx.dir.checkpoints)
        killForTest(n, "switch")
        writeLatest(ctx.dir.checkpoints, name, n)
        prune(ctx.dir.checkpoints, name, keep)
        return final
      },
      catch: fail(tmp)
    })
  })

/** The folder `latest` names, or why it names none (missing, not a checkpoint name, no such folder). */
const pointed = (checkpoints: string): { readonly dir: string } | { readonly why: string } => {
  const pointer = join(checkpoints, "latest")
  if (!existsSync(pointer)) return { why: "checkpoints/latest is missing" }
  const name = readFileSync(pointer, "utf8").trim()
  if (!checkpointName.test(name)) return { why: `checkpoints/latest names "${name}", not a checkpoint` }
  const dir = join(checkpoints, name)
  return existsSync(dir) && statSync(dir).isDirectory() ? { dir } : { why: `checkpoints/latest names ${name}, which is not there` }
}

/** What `checkpoints/` holds, for a notice or an error. */
const inventory = (checkpoints: string): string => {
  const complete = list(checkpoints)
  const partial = existsSync(checkpoints) ? readdirSync(checkpoints).filter((f) => /^step-\d+\.tmp$/.test(f)).sort() : []
  return `checkpoints there: ${complete.length > 0 ? complete.join(", ") : "none"}${partial.length > 0 ? `; unfinished: ${partial.join(", ")}` : ""}`
}

/**
 * The checkpoint to continue from: the one `latest` names, or, when `latest` is missing or names no
 * folder (a run killed before its first `latest`, a pointer lost), the newest whose checksums verify,
 * with a notice saying so. A checkpoint `latest` names that fails its checksums is an error (`load`).
 */
export const latest = (checkpoints: string): Effect.Effect<{ readonly dir: string; readonly notice: string | null }, CheckpointError> =>
  Effect.gen(function*() {
    const p = yield* Effect.try({ try: () => pointed(checkpoints), catch: fail(checkpoints) })
    if ("dir" in p) return { dir: p.dir, notice: null }
    const there = yield* Effect.try({ try: () => ({ names: list(checkpoints), inventory: inventory(checkpoints) }), catch: fail(checkpoints) })
    for (const name of [...there.names].reverse()) {
      const checked = yield* Effect.result(verify(join(checkpoints, name)))
      if (checked._tag === "Success") return { dir: join(checkpoints, name), notice: `${p.why} (${there.inventory}); using the newest valid checkpoint, ${name}` }
    }
    const none = there.names.length === 0 ? "no checkpoint was completed" : "none of them is complete (checksums)"
    return yield* new CheckpointError({ path: checkpoints, reason: `${p.why}, and ${none} (${there.inventory})` })
  })

/** Checks every file of a checkpoint against its `checksums.json`, and that the required ones are listed. */
const verify = (dir: string): Effect.Effect<Record<string, string>, CheckpointError> =>
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
    const policy = "policy/adapter_config.json" in sums
      ? ["policy/adapter_config.json", "policy/adapter_model.safetensors", `policy/${LoraBase.FILE}`]
      : ["policy/model.safetensors", "policy/config.json"]
    for (const required of ["state.json", ...policy]) {
      if (!(required in sums)) return yield* new CheckpointError({ path: join(dir, required), reason: "missing from the checkpoint" })
    }
    return sums
  })

/** Verifies a checkpoint's checksums and reads its state, refusing one made under another config; no tensors are read. */
export const inspect = (dir: string, expected: { readonly recipeHash: string }): Effect.Effect<{ readonly sums: Record<string, string>; readonly state: State }, CheckpointError> =>
  Effect.gen(function*() {
    const sums = yield* verify(dir)
    const state = JSON.parse(readFileSync(join(dir, "state.json"), "utf8")) as State
    if (state.format !== "r1flow-checkpoint" || state.version !== 1) {
      return yield* new CheckpointError({ path: join(dir, "state.json"), reason: `not an r1flow checkpoint (format ${String(state.format)} version ${String(state.version)})` })
    }
    if (state.recipeHash !== expected.recipeHash) {
      return yield* new CheckpointError({ path: dir, reason: "the checkpoint was made under a different config than this run's manifest; refusing to mix them" })
    }
    return { sums, state }
  })

/** A checkpoint's policy: the whole model, or under LoRA its base (checked against the record) with the adapters on. */
export const loadPolicy = (dir: string): Effect.Effect<Transformer.Model, CheckpointError> => {
  const policyDir = join(dir, "policy")
  const loaded = LoraBase.isLora(policyDir) ? LoraBase.load(policyDir, join(dir, "..", "..")) : Checkpoint.load(policyDir)
  return loaded.pipe(Effect.mapError((e) => new CheckpointError({ path: e.path, reason: Checkpoint.describe(e).slice(e.path.length + 2) })))
}

/** Verifies a checkpoint's checksums, then reads it. Nothing of the run is touched. */
export const load = (dir: string, expected: { readonly recipeHash: string }): Effect.Effect<Restored, CheckpointError> =>
  Effect.gen(function*() {
    const { sums, state } = yield* inspect(dir, expected)
    const policy = yield* loadPolicy(dir)
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
