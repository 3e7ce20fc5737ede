/**
 * Runs one untrusted program in a throw-away bubblewrap sandbox.
 *
 * Model-written code is hostile until proven otherwise, so a run never happens in the trainer's
 * process or with its privileges:
 *
 * - bwrap is started as `nobody` (65534) when the trainer is root, so the code never holds a root
 *   uid anywhere (the kernel does not enforce `RLIMIT_NPROC` for uid 0) and cannot signal the trainer;
 * - new user, network, PID, IPC, UTS and cgroup namespaces (`--unshare-all`): the network namespace
 *   holds only its own loopback, and the trainer's processes are invisible;
 * - the root is a read-only bind of the system folders only (`/usr`, plus the interpreter's prefix when
 *   it lives elsewhere); `/etc`, `/home`, `/root` and the project are not there at all; the working
 *   folder `/code` and `/tmp` are private size-capped tmpfs;
 * - `prlimit` inside the sandbox sets CPU seconds, address space, file size, open files and
 *   processes (threads count) before the interpreter starts;
 * - a wall-clock timer and an output cap SIGKILL bwrap's process group; `--die-with-parent` then kills
 *   the sandbox's PID 1, and the kernel kills everything left in that PID namespace (daemons and
 *   double-forks included).
 *
 * Whether the sandbox started is known from a byte the harness writes on fd 3 as its first act: no
 * byte means the interpreter never ran (a broken sandbox, an infrastructure failure), never a wrong answer.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process"
import { randomBytes } from "node:crypto"
import { accessSync, constants, existsSync, lstatSync, mkdtempSync, readlinkSync, realpathSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import type { Readable, Writable } from "node:stream"
import { dirname, join } from "node:path"
import { Effect, Schema } from "effect"

/** Languages the sandbox can run. */
export const Language = Schema.Literals(["javascript", "python"])
/** Languages the sandbox can run. */
export type Language = typeof Language.Type

/** Limits of one run. */
export interface Limits {
  /** CPU seconds (`RLIMIT_CPU`, all threads and children together). */
  readonly cpuSeconds: number
  /** Wall-clock limit; the whole process tree is killed when it passes. */
  readonly wallMs: number
  /** Address space per process (`RLIMIT_AS`). */
  readonly memoryBytes: number
  /** Largest file a process may write (`RLIMIT_FSIZE`); also the size of each tmpfs. */
  readonly fileBytes: number
  /** Open file descriptors (`RLIMIT_NOFILE`). */
  readonly openFiles: number
  /** Processes and threads of the sandbox user (`RLIMIT_NPROC`); node alone needs about a dozen threads. */
  readonly processes: number
  /** Bytes kept of stdout and of stderr; producing more kills the run. */
  readonly outputBytes: number
}

/** Defaults sized for short competitive-programming style solutions. */
export const defaultLimits: Limits = {
  cpuSeconds: 2,
  wallMs: 5_000,
  memoryBytes: 2 * 1024 ** 3,
  fileBytes: 16 * 1024 ** 2,
  openFiles: 64,
  processes: 64,
  outputBytes: 1024 ** 2
}

/** A program to run: files placed in the working folder, the entry file, and stdin. */
export interface Program {
  readonly language: Language
  /** File name (no folders) → contents, written into the working folder. */
  readonly files: Readonly<Record<string, string>>
  /** Arguments after the interpreter, e.g. `["harness.cjs", "io", "solution.js"]` (relative to the working folder). */
  readonly args: ReadonlyArray<string>
  readonly stdin: string
}

/** How a run ended. `stdout`/`stderr` are cut at `Limits.outputBytes`. */
export type Outcome =
  | { readonly _tag: "Exited"; readonly code: number; readonly stdout: string; readonly stderr: string; readonly wallMs: number }
  | { readonly _tag: "Signaled"; readonly signal: string; readonly stdout: string; readonly stderr: string; readonly wallMs: number }
  | { readonly _tag: "TimedOut"; readonly stdout: string; readonly stderr: string; readonly wallMs: number }
  | { readonly _tag: "OutputLimit"; readonly stdout: string; readonly stderr: string; readonly wallMs: number }

/** The sandbox cannot be created on this machine (checked once, before any scoring). */
export class SandboxUnavailable extends Schema.TaggedError<SandboxUnavailable>()("SandboxUnavailable", {
  message: Schema.String
}) {}

/** One run could not start or be supervised: an infrastructure failure, not a verdict on the code. */
export class SandboxError extends Schema.TaggedError<SandboxError>()("SandboxError", {
  message: Schema.String
}) {}

/** How programs are isolated. `unsandboxed` only rlimits and process-group kills: it does not contain hostile code. */
export type Mode = "bwrap" | "unsandboxed"

/** A ready runner. */
export interface Sandbox {
  readonly mode: Mode
  /** Languages whose interpreter was found and ran in the sandbox. */
  readonly languages: ReadonlySet<Language>
  /** Why a language is missing (e.g. no `python3` under `/usr`). */
  readonly missing: ReadonlyMap<Language, string>
  /** The binaries it runs (for tests and diagnostics). */
  readonly tools: Tools
  readonly run: (program: Program, limits: Limits) => Effect.Effect<Outcome, SandboxError>
}

/** Where the program runs inside the sandbox. */
export const WORKDIR = "/code"
const NOBODY = 65534

/** Options of `make`. `bwrap`, `prlimit` and `timeout` are paths to the binaries (default: found on `PATH`). */
export interface Options {
  readonly mode: Mode
  readonly bwrap?: string
  readonly prlimit?: string
  readonly timeout?: string
  /** The python3 to run (default: a system one under `/usr`). */
  readonly python?: string
}

const which = (name: string): string | undefined => {
  for (const dir of (process.env.PATH ?? "/usr/bin:/bin").split(":")) {
    const p = join(dir, name)
    try {
      accessSync(p, constants.X_OK)
      return p
    } catch {
      continue
    }
  }
  return undefined
}

/**
 * A system `python3` under `/usr`. Version managers' shims are scripts under the home folder, which the
 * sandbox never mounts.
 */
const findPython = (): string | undefined => {
  for (const p of ["/usr/bin/python3", "/usr/local/bin/python3"]) {
    if (existsSync(p)) return realpathSync(p)
  }
  return undefined
}

/** Read-only binds for `/usr` and the merged-/usr links or folders next to it, plus each interpreter's prefix. */
const rootArgs = (interpreters: ReadonlyArray<string>): Array<string> => {
  const args = ["--ro-bind", "/usr", "/usr"]
  for (const top of ["/bin", "/sbin", "/lib", "/lib32", "/lib64"]) {
    if (!existsSync(top)) continue
    const st = lstatSync(top)
    if (st.isSymbolicLink()) args.push("--symlink", readlinkSync(top), top)
    else if (st.isDirectory()) args.push("--ro-bind", top, top)
  }
  for (const bin of interpreters) {
    if (bin.startsWith("/usr/")) continue
    // e.g. /opt/node/bin/node → /opt/node
    const prefix = dirname(dirname(bin))
    args.push("--ro-bind", prefix, prefix)
  }
  return args
}

const prlimitArgs = (prlimit: string, limits: Limits): Array<string> => [
  prlimit,
  `--cpu=${Math.max(1, Math.ceil(limits.cpuSeconds))}`,
  `--as=${Math.floor(limits.memoryBytes)}`,
  `--fsize=${Math.floor(limits.fileBytes)}`,
  `--nofile=${Math.floor(limits.openFiles)}`,
  `--nproc=${Math.floor(limits.processes)}`,
  "--"
]

const interpreterArgs = (language: Language, bin: string, limits: Limits): Array<string> =>
  language === "javascript"
    // Without a heap cap V8 sizes its heap past RLIMIT_AS and dies on a failed mmap instead of a clean OOM.
    ? [bin, `--max-old-space-size=${Math.max(32, Math.floor(limits.memoryBytes / 1024 ** 2 / 4))}`]
    : [bin, "-B", "-I"]

/** A process to start: command line, files to feed on fds 4…, and what to clean up after. */
interface Plan {
  readonly command: string
  readonly args: Array<string>
  readonly cwd: string
  readonly files: Array<string>
  readonly viaBwrap: boolean
  readonly uid?: number
  readonly gid?: number
  readonly cleanup: () => void
}

const env = (cwd: string) => ({ PATH: "/usr/bin:/bin", HOME: cwd, TMPDIR: cwd, LANG: "C.UTF-8", PYTHONDONTWRITEBYTECODE: "1", PYTHONHASHSEED: "0" })

/** The binaries a sandbox runs, and the interpreter per language (`undefined`: not available). */
export interface Tools {
  readonly mode: Mode
  readonly bwrap: string
  readonly prlimit: string
  readonly timeout: string
  readonly interpreters: Readonly<Record<Language, string | undefined>>
}

/**
 * `timeout -s KILL` wraps everything: the wall-clock kill then holds even when the process that started
 * the run is gone (a reward worker thread terminated at its call timeout takes its timers with it).
 */
const plan = (tools: Tools, program: Program, limits: Limits): Plan => {
  const bin = tools.interpreters[program.language]!
  const wallKill = [tools.timeout, "-s", "KILL", `${Math.ceil(limits.wallMs / 1000) + 1}s`]
  const inner = [...prlimitArgs(tools.prlimit, limits), ...interpreterArgs(program.language, bin, limits), ...program.args]
  const names = Object.keys(program.files)
  if (tools.mode === "unsandboxed") {
    const dir = mkdtempSync(join(tmpdir(), "r1flow-code-"))
    for (const name of names) writeFileSync(join(dir, name), program.files[name])
    return {
      command: wallKill[0],
      args: [...wallKill.slice(1), ...inner],
      cwd: dir,
      files: [],
      viaBwrap: false,
      cleanup: () => rmSync(dir, { recursive: true, force: true })
    }
  }
  const size = String(Math.max(1024 ** 2, Math.floor(limits.fileBytes) * 4))
  const args = [
    ...wallKill.slice(1),
    tools.bwrap,
    "--unshare-all",
    "--unshare-user",
    "--disable-userns",
    "--die-with-parent",
    "--new-session",
    ...rootArgs(Object.values(tools.interpreters).filter((b): b is string => b !== undefined)),
    "--proc", "/proc",
    "--dev", "/dev",
    "--size", size, "--tmpfs", WORKDIR,
    "--size", size, "--tmpfs", "/tmp",
    // fds 4, 5, …: one per file, copied into the tmpfs by bwrap and made read-only.
    ...names.flatMap((n, i) => ["--ro-bind-data", String(4 + i), `${WORKDIR}/${n}`]),
    "--chdir", WORKDIR,
    "--clearenv",
    ...Object.entries(env(WORKDIR)).flatMap(([k, v]) => ["--setenv", k, v]),
    "--",
    ...inner
  ]
  return {
    command: wallKill[0],
    args,
    cwd: "/",
    files: names.map((n) => program.files[n]),
    viaBwrap: true,
    // Root would make RLIMIT_NPROC a no-op (the kernel exempts uid 0) and let the code signal the trainer.
    ...(process.getuid?.() === 0 ? { uid: NOBODY, gid: NOBODY } : {}),
    cleanup: () => {}
  }
}

const signalNames: Record<number, string> = { 6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 15: "SIGTERM", 24: "SIGXCPU", 25: "SIGXFSZ" }
const signalName = (n: number) => signalNames[n] ?? `signal ${n}`

/** Starts the plan and supervises it: wall clock, output cap, the fd-3 start byte, interruption. */
const supervise = (p: Plan, program: Program, limits: Limits): Effect.Effect<Outcome, SandboxError> =>
  Effect.callback<Outcome, SandboxError>((resume, signal) => {
    const started = Date.now()
    let child: ChildProcess
    try {
      child = spawn(p.command, p.args, {
        cwd: p.cwd,
        env: env(p.cwd),
        detached: true,
        stdio: ["pipe", "pipe", "pipe", "pipe", ...p.files.map(() => "pipe" as const)],
        ...(p.uid !== undefined ? { uid: p.uid, gid: p.gid } : {})
      })
    } catch (e) {
      p.cleanup()
      resume(Effect.fail(new SandboxError({ message: `cannot start ${p.command}: ${(e as Error).message}` })))
      return
    }
    const out: Array<Buffer> = []
    const err: Array<Buffer> = []
    const seen = { out: 0, err: 0 }
    let ready = false
    let verdict: "TimedOut" | "OutputLimit" | undefined
    let done = false
    let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined
    let drain: ReturnType<typeof setTimeout> | undefined

    const killTree = () => {
      if (child.pid === undefined) return
      try {
        process.kill(-child.pid, "SIGKILL")
      } catch {
        // Already gone.
      }
    }
    const finish = (result: Effect.Effect<Outcome, SandboxError>) => {
      if (done) return
      done = true
      clearTimeout(wall)
      clearTimeout(drain)
      signal.removeEventListener("abort", onAbort)
      killTree()
      p.cleanup()
      resume(result)
    }
    const settle = () => {
      const wallMs = Date.now() - started
      const stdout = Buffer.concat(out).toString("utf8")
      const stderr = Buffer.concat(err).toString("utf8")
      if (verdict !== undefined) return finish(Effect.succeed({ _tag: verdict, stdout, stderr, wallMs }))
      if (!ready) {
        const why = stderr.trim().split("\n").slice(-3).join(" | ") || `exit ${exited?.code ?? exited?.signal}`
        return finish(Effect.fail(new SandboxError({ message: `the sandboxed interpreter never started: ${why}` })))
      }
      if (exited?.signal) return finish(Effect.succeed({ _tag: "Signaled", signal: exited.signal, stdout, stderr, wallMs }))
      const code = exited?.code ?? -1
      // `timeout` exits 137 when it had to kill; bwrap reports a child killed by signal N as 128 + N.
      if (code === 137 && wallMs >= limits.wallMs) return finish(Effect.succeed({ _tag: "TimedOut", stdout, stderr, wallMs }))
      if (p.viaBwrap && code > 128 && code < 160) return finish(Effect.succeed({ _tag: "Signaled", signal: signalName(code - 128), stdout, stderr, wallMs }))
      return finish(Effect.succeed({ _tag: "Exited", code, stdout, stderr, wallMs }))
    }
    const capture = (chunks: Array<Buffer>, stream: "out" | "err") => (b: Buffer) => {
      const room = limits.outputBytes - seen[stream]
      if (room > 0) chunks.push(b.length <= room ? b : b.subarray(0, room))
      seen[stream] += b.length
      if (b.length > room && verdict === undefined) {
        verdict = "OutputLimit"
        killTree()
      }
    }
    child.stdout!.on("data", capture(out, "out"))
    child.stderr!.on("data", capture(err, "err"))
    const status = child.stdio[3] as Readable
    status.on("data", () => { ready = true })
    status.on("error", () => {})
    child.stdin!.on("error", () => {})
    child.stdin!.end(program.stdin)
    p.files.forEach((data, i) => {
      const w = child.stdio[4 + i] as Writable
      w.on("error", () => {})
      w.end(data)
    })
    const wall = setTimeout(() => {
      verdict ??= "TimedOut"
      killTree()
    }, limits.wallMs)
    child.on("exit", (code, sig) => {
      exited = { code, signal: sig }
      // 'close' waits for every holder of the pipes; give stragglers a moment after the kill, then stop waiting.
      drain = setTimeout(() => {
        child.stdout!.destroy()
        child.stderr!.destroy()
        settle()
      }, 500)
    })
    child.on("close", (code, sig) => {
      exited ??= { code, signal: sig }
      settle()
    })
    child.on("error", (e) => finish(Effect.fail(new SandboxError({ message: `cannot start ${p.command}: ${e.message}` }))))
    const onAbort = () => finish(Effect.fail(new SandboxError({ message: "interrupted" })))
    signal.addEventListener("abort", onAbort)
  })

/** Runs `program` under `tools` (exported for tests that need a deliberately broken tool set). */
export const runWith = (tools: Tools, program: Program, limits: Limits): Effect.Effect<Outcome, SandboxError> =>
  Effect.suspend(() =>
    tools.interpreters[program.language] === undefined
      ? Effect.fail(new SandboxError({ message: `no ${program.language} interpreter is available in the sandbox` }))
      : supervise(plan(tools, program, limits), program, limits)
  )

/** Runs a one-line program synchronously and checks it printed `nonce`; the failure text otherwise. */
const probe = (tools: Tools, language: Language): string | undefined => {
  const nonce = randomBytes(8).toString("hex")
  const code = language === "javascript"
    ? `require("fs").writeSync(3, "R"); console.log(${JSON.stringify(nonce)})`
    : `import os; os.write(3, b"R"); print(${JSON.stringify(nonce)})`
  const limits = { ...defaultLimits, wallMs: 20_000, cpuSeconds: 10 }
  const p = plan(tools, { language, files: {}, args: [language === "javascript" ? "-e" : "-c", code], stdin: "" }, limits)
  const r = spawnSync(p.command, p.args, {
    cwd: p.cwd,
    env: env(p.cwd),
    stdio: ["pipe", "pipe", "pipe", "pipe"],
    timeout: limits.wallMs,
    killSignal: "SIGKILL",
    ...(p.uid !== undefined ? { uid: p.uid, gid: p.gid } : {})
  })
  p.cleanup()
  const stdout = r.stdout?.toString("utf8") ?? ""
  if (r.error === undefined && r.status === 0 && stdout.includes(nonce)) return undefined
  const stderr = (r.stderr?.toString("utf8") ?? "").trim().split("\n").slice(-3).join(" | ")
  return r.error !== undefined ? r.error.message : `exit ${r.status ?? r.signal}${stderr ? `: ${stderr}` : ""}`
}

const USERNS_HINT =
  " (bwrap needs user namespaces: check `sysctl user.max_user_namespaces` and `kernel.unprivileged_userns_clone`," +
  " AppArmor's `kernel.apparmor_restrict_unprivileged_userns`, or the container's seccomp profile)"

/**
 * Finds the tools and checks, synchronously and once per language, that a one-line program starts and
 * prints inside the sandbox. Fails with `SandboxUnavailable` naming what is missing or what bwrap said;
 * a missing or broken python only removes python (its rows then score NaN).
 */
export const make = (options: Options): Effect.Effect<Sandbox, SandboxUnavailable> =>
  Effect.gen(function*() {
    if (process.platform !== "linux") {
      return yield* new SandboxUnavailable({ message: `the code sandbox needs Linux (namespaces and rlimits); this is ${process.platform}` })
    }
    const need = (name: string, given: string | undefined, why: string) => {
      const path = given ?? which(name)
      return path !== undefined && existsSync(path) ? path : `missing: \`${name}\`${given ? ` at ${given}` : " on PATH"} (${why})`
    }
    const prlimit = need("prlimit", options.prlimit, "util-linux; it sets each run's rlimits")
    const timeout = need("timeout", options.timeout, "coreutils; it enforces the wall-clock limit")
    const bwrap = options.mode === "bwrap" ? need("bwrap", options.bwrap, "bubblewrap; Debian: apt-get install -y bubblewrap") : ""
    const problem = [prlimit, timeout, bwrap].find((t) => t.startsWith("missing: "))
    if (problem !== undefined) return yield* new SandboxUnavailable({ message: problem.slice("missing: ".length) + " was not found" })
    if (options.mode === "bwrap" && !realpathSync(prlimit).startsWith("/usr/")) {
      return yield* new SandboxUnavailable({ message: `prlimit at ${prlimit} is outside /usr, so it would not exist inside the sandbox` })
    }
    const python = options.python ?? findPython()
    const tools: Tools = { mode: options.mode, bwrap, prlimit, timeout, interpreters: { javascript: realpathSync(process.execPath), python } }
    const jsProblem = yield* Effect.sync(() => probe(tools, "javascript"))
    if (jsProblem !== undefined) {
      return yield* new SandboxUnavailable({
        message: `${options.mode === "bwrap" ? `bubblewrap (${bwrap})` : "the unsandboxed runner"} could not run node: ${jsProblem}` +
          (options.mode === "bwrap" ? USERNS_HINT : "")
      })
    }
    const missing = new Map<Language, string>()
    const pyProblem = python === undefined ? "no python3 under /usr" : yield* Effect.sync(() => probe(tools, "python"))
    if (pyProblem !== undefined) missing.set("python", pyProblem)
    const usable: Tools = { ...tools, interpreters: { ...tools.interpreters, python: pyProblem === undefined ? python : undefined } }
    return {
      mode: options.mode,
      languages: new Set<Language>(pyProblem === undefined ? ["javascript", "python"] : ["javascript"]),
      missing,
      tools: usable,
      run: (program, limits) => runWith(usable, program, limits)
    }
  })

/**
 * The JavaScript harness. It writes the start byte on fd 3, and in `assert` mode reads the nonce from
 * stdin before any model code runs, then prints it only after the program (solution + assertions)
 * finished loading without throwing, so `process.exit(0)` early cannot pass. (Code that deliberately
 * tampers with the harness in its own process, e.g. through `inspector`, is reward hacking the sandbox
 * does not try to stop; it protects the host.)
 */
export const HARNESS_JS = `"use strict"
const fs = require("fs")
fs.writeSync(3, "R")
fs.closeSync(3)
const mode = process.argv[2]
const file = require("path").resolve(process.argv[3])
const nonce = mode === "assert" ? fs.readFileSync(0, "utf8") : null
process.argv.splice(1, 3, file)
import(file).then(() => {
  if (nonce !== null) process.stdout.write("\\n" + nonce + "\\n")
}, (e) => {
  process.stderr.write(String(e && e.stack || e) + "\\n")
  process.exitCode = 1
})
`

/** The Python harness: same protocol as `HARNESS_JS`. */
export const HARNESS_PY = `import os, runpy, sys
os.write(3, b"R")
os.close(3)
mode, path = sys.argv[1], os.path.abspath(sys.argv[2])
nonce = sys.stdin.read() if mode == "assert" else None
sys.argv = [path]
sys.path[0:0] = [os.path.dirname(path)]
runpy.run_path(path, run_name="__main__")
if nonce is not None:
    sys.stdout.write("\\n" + nonce + "\\n")
    sys.stdout.flush()
`
