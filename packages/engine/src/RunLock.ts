/**
 * One writer per run directory. `run` and `resume` hold `run.lock` for as long as they write: a JSON
 * file naming the holder (pid, host, command, since). A second writer is refused while the holder
 * lives; a lock whose process is gone (SIGKILL, a crash, a reboot) is stale and is taken over. `eval`
 * of a run takes no lock: it writes only files of its own (`evals/standalone/`).
 *
 * The lock file appears whole or not at all (written aside, then hard-linked into place, which fails
 * when one exists), and a takeover moves the stale file aside and checks it moved the stale one, so
 * two processes taking over one stale lock cannot both win.
 */
import { Effect, Schema, type Scope } from "effect"
import { randomBytes } from "node:crypto"
import { linkSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync } from "node:fs"
import { hostname } from "node:os"
import type * as RunDir from "./RunDir.js"

/** Who holds a run directory. */
export interface Holder {
  readonly pid: number
  readonly host: string
  /** The r1flow command holding it (`run`, `resume`). */
  readonly command: string
  /** ISO time it was taken. */
  readonly since: string
  /** Tells this holding apart from another by a process that reuses the pid. */
  readonly token: string
  /** Linux: the process's start time (`/proc/<pid>/stat`), so a reused pid does not keep a stale lock alive. */
  readonly procStart?: string | null
}

/** The run directory has a live writer (or one that cannot be checked from here). */
export class RunLockedError extends Schema.TaggedError<RunLockedError>()("RunLockedError", {
  path: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.path}: ${this.reason}`
  }
}

/** Could not read or write the lock file itself. */
export class RunLockError extends Schema.TaggedError<RunLockError>()("RunLockError", {
  path: Schema.String,
  message: Schema.String
}) {}

const procStart = (pid: number): string | null => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    // Field 22 (starttime), counting from the state field (3) after the parenthesised command name.
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? null
  } catch {
    return null
  }
}

/** The holder in a lock file; `undefined` when the file is gone, `null` when it is not a lock. */
const readHolder = (path: string): Holder | null | undefined => {
  let text: string
  try {
    text = readFileSync(path, "utf8")
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined
    throw e
  }
  try {
    const h = JSON.parse(text) as Holder
    return Number.isInteger(h.pid) && h.pid > 0 && typeof h.host === "string" && typeof h.token === "string" ? h : null
  } catch {
    return null
  }
}

/** Whether the holder still runs: only a process on this host can be checked. */
const stateOf = (h: Holder): "alive" | "dead" | "elsewhere" => {
  if (h.host !== hostname()) return "elsewhere"
  try {
    process.kill(h.pid, 0)
  } catch (e) {
    // EPERM: it exists, under another user.
    if ((e as NodeJS.ErrnoException).code === "ESRCH") return "dead"
  }
  const start = h.procStart == null ? null : procStart(h.pid)
  return start !== null && start !== h.procStart ? "dead" : "alive"
}

const describe = (h: Holder) => `r1flow ${h.command} (pid ${h.pid} on ${h.host}, since ${h.since})`

type Outcome =
  | { readonly taken: true; readonly stale: Holder | null }
  | { readonly taken: false; readonly reason: string }

/** Moves a dead holder's lock out of the way; false when what was moved was not that lock (a rival's). */
const takeOver = (path: string, stale: Holder): boolean => {
  const aside = `${path}.stale-${process.pid}`
  try {
    renameSync(path, aside)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false
    throw e
  }
  const moved = readHolder(aside)
  if (moved?.token !== stale.token) {
    // A rival took the stale lock over first and we moved its fresh one: put it back.
    try {
      linkSync(aside, path)
    } catch {
      // Yet another process holds it now; either way ours is not the lock to keep.
    }
  }
  unlinkSync(aside)
  return moved?.token === stale.token
}

const tryAcquire = (path: string, me: Holder): Outcome => {
  const tmp = `${path}.tmp-${process.pid}`
  writeFileSync(tmp, JSON.stringify(me))
  try {
    let stale: Holder | null = null
    for (let attempt = 0; attempt < 8; attempt++) {
      try {
        linkSync(tmp, path)
        return { taken: true, stale }
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e
      }
      const holder = readHolder(path)
      if (holder === undefined) continue
      if (holder === null) return { taken: false, reason: "run.lock is there but is not a lock r1flow wrote; if no r1flow process uses this run, remove it" }
      const state = stateOf(holder)
      if (state === "alive") {
        return { taken: false, reason: `in use by ${describe(holder)}; a run directory has one writer at a time, so wait for it to end or stop it (r1flow eval needs no lock)` }
      }
      if (state === "elsewhere") {
        return { taken: false, reason: `locked by ${describe(holder)}, which cannot be checked from ${hostname()}; if it is no longer running, remove run.lock` }
      }
      if (takeOver(path, holder)) stale = holder
    }
    return { taken: false, reason: "other processes keep taking run.lock; try again" }
  } finally {
    rmSync(tmp, { force: true })
  }
}

const release = (path: string, me: Holder) => {
  try {
    if (readHolder(path)?.token === me.token) rmSync(path, { force: true })
  } catch {
    // An unreadable lock at the end is left for the next writer to judge; the run's own work is done.
  }
}

/**
 * Holds `dir`'s lock for the scope as `command`. Refuses with `RunLockedError` while another holder
 * lives; returns the stale holder it took over, if any (for a notice).
 */
export const acquire = (dir: RunDir.RunDir, command: string): Effect.Effect<Holder | null, RunLockedError | RunLockError, Scope.Scope> => {
  const me: Holder = {
    pid: process.pid,
    host: hostname(),
    command,
    since: new Date().toISOString(),
    token: randomBytes(8).toString("hex"),
    procStart: procStart(process.pid)
  }
  return Effect.acquireRelease(
    Effect.try({ try: () => tryAcquire(dir.lock, me), catch: (e) => new RunLockError({ path: dir.lock, message: (e as Error).message }) }).pipe(
      Effect.flatMap((o) => (o.taken ? Effect.succeed(o.stale) : Effect.fail(new RunLockedError({ path: dir.root, reason: o.reason }))))
    ),
    () => Effect.sync(() => release(dir.lock, me))
  )
}

/** The notice for a stale lock taken over. */
export const tookOver = (stale: Holder): string => `took over a stale lock: ${describe(stale)} is no longer running`
