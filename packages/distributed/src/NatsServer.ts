/**
 * A local nats-server with JetStream as a scoped resource: for `r1flow run --workers N` on one machine and
 * for tests. Spawned on 127.0.0.1 only (a local run has no business listening on other interfaces), with
 * its JetStream store in a directory the caller owns, so a restart on the same directory keeps the queues.
 *
 * The server writes its pid to `<storeDir>/nats-server.pid`. A process killed with SIGKILL cannot stop the
 * server it started, and two servers on one store would each take it for their own; so `start` first
 * stops a server still running on that store (the pid file's process, if it is a nats-server of that store).
 */
import { spawn, type ChildProcess } from "node:child_process"
import { accessSync, constants, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { createConnection, createServer } from "node:net"
import { delimiter, join } from "node:path"
import { Effect, Schema, type Scope } from "effect"

/** The server could not start: binary absent, it exited, or it never accepted a connection. */
export class NatsServerError extends Schema.TaggedError<NatsServerError>()("NatsServerError", {
  binary: Schema.String,
  port: Schema.Number,
  reason: Schema.Literals(["NotFound", "Exited", "Timeout", "Spawn"]),
  message: Schema.String
}) {}

/** How to start the server. */
export interface Options {
  /** JetStream store directory (created by the server). Reuse it to restart with the same streams. */
  readonly storeDir: string
  /** TCP port on 127.0.0.1; a free one when omitted (`freePort`). */
  readonly port?: number
  /** Clients must authenticate with this user and `password`. */
  readonly user?: string
  readonly password?: string
  /** Largest message payload in bytes (server default 1 MiB); small in tests to force chunking. */
  readonly maxPayload?: number
  /** Path of the binary; `locate()` when omitted. */
  readonly binary?: string
}

/** A running server. */
export interface Server {
  readonly url: string
  readonly port: number
  readonly storeDir: string
  /** The child process (tests kill it to simulate a crash). */
  readonly process: ChildProcess
}

const isExecutable = (path: string) => {
  try {
    accessSync(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}

/**
 * The `nats-server` binary on PATH, else Debian's `/usr/sbin/nats-server` (sbin is often not on a user's
 * PATH); `undefined` when neither exists.
 */
export const locate = (): string | undefined => {
  const dirs = [...(process.env["PATH"] ?? "").split(delimiter).filter((d) => d !== ""), "/usr/sbin", "/usr/local/sbin"]
  return dirs.map((d) => join(d, "nats-server")).find(isExecutable)
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export const freePort: Effect.Effect<number> = Effect.callback<number>((resume) => {
  const srv = createServer()
  srv.listen(0, "127.0.0.1", () => {
    const address = srv.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    srv.close(() => resume(Effect.succeed(port)))
  })
})

/** True once the server greets a TCP client with its INFO line (it accepts connections). */
const greets = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port })
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(1000, () => done(false))
    socket.once("data", (d) => done(d.toString("utf8").startsWith("INFO ")))
    socket.once("error", () => done(false))
  })

/** The pid file a server started here writes in its store. */
export const pidFile = (storeDir: string) => join(storeDir, "nats-server.pid")

/** A file's text, "" when it cannot be read (a /proc entry vanishes with its process). */
const readOr = (path: string) => {
  try {
    return readFileSync(path, "utf8")
  } catch {
    return ""
  }
}

/** True while `pid` runs; a zombie (exited, not yet reaped: a container's init may never reap it) is not. */
const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  return !/ Z /.test(readOr(join("/proc", String(pid), "stat")).replace(/^.*\)/, ")"))
}

/** The pid of a nats-server still serving `storeDir` (its pid file's process, if /proc shows it is one), if any. */
const staleServer = (storeDir: string): number | undefined => {
  const file = pidFile(storeDir)
  const pid = Number(readOr(file).trim())
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid || !alive(pid)) return undefined
  // Only on proof that it is ours: a pid is reused, and without /proc (not Linux) there is no proof.
  const argv = readOr(join("/proc", String(pid), "cmdline")).split("\0")
  return argv.some((a) => a.endsWith("nats-server")) && argv.includes(storeDir) ? pid : undefined
}

/** Stops (SIGTERM, SIGKILL after 5 s) a server a killed owner left running on `storeDir`. */
const stopStale = (storeDir: string) =>
  Effect.gen(function*() {
    const pid = staleServer(storeDir)
    if (pid === undefined) return
    yield* Effect.logWarning(`nats-server ${pid} still serves ${storeDir} (its owner was killed): stopping it`)
    yield* Effect.sync(() => process.kill(pid, "SIGTERM"))
    const deadline = Date.now() + 5000
    while (alive(pid) && Date.now() < deadline) yield* Effect.sleep(50)
    if (alive(pid)) yield* Effect.sync(() => process.kill(pid, "SIGKILL"))
    while (alive(pid) && Date.now() < deadline + 5000) yield* Effect.sleep(50)
  })

const args = (o: Options, port: number): Array<string> => {
  mkdirSync(o.storeDir, { recursive: true })
  const a = ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", o.storeDir, "-P", pidFile(o.storeDir)]
  if (o.user !== undefined) a.push("--user", o.user, "--pass", o.password ?? "")
  if (o.maxPayload !== undefined) {
    // max_payload has no command-line flag; a config file holds it and the flags above still apply.
    const conf = join(o.storeDir, "nats-server.conf")
    writeFileSync(conf, `max_payload: ${o.maxPayload}\n`)
    a.push("-c", conf)
  }
  return a
}

const waitReady = (child: ChildProcess, binary: string, port: number, stderr: () => string) =>
  Effect.gen(function*() {
    const deadline = Date.now() + 15_000
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) {
        return yield* new NatsServerError({ binary, port, reason: "Exited", message: `${binary} exited (${child.exitCode ?? child.signalCode}) before accepting connections: ${stderr().slice(-600)}` })
      }
      if (yield* Effect.promise(() => greets(port))) return
      yield* Effect.sleep(50)
    }
    return yield* new NatsServerError({ binary, port, reason: "Timeout", message: `${binary} did not accept connections on 127.0.0.1:${port} within 15 s: ${stderr().slice(-600)}` })
  })

const stop = (child: ChildProcess) =>
  Effect.callback<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    // SIGTERM lets JetStream flush its store; SIGKILL only if it hangs.
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000)
    child.once("exit", () => {
      clearTimeout(timer)
      resume(Effect.void)
    })
    child.kill("SIGTERM")
  })

const spawnServer = (binary: string, o: Options, port: number) =>
  Effect.try({
    try: () => spawn(binary, args(o, port), { stdio: ["ignore", "ignore", "pipe"] }),
    catch: (cause) => new NatsServerError({ binary, port, reason: "Spawn", message: `cannot spawn ${binary}: ${String(cause)}` })
  })

/** Starts nats-server with JetStream and waits until it accepts connections; stopped when the scope closes. */
export const start = (o: Options): Effect.Effect<Server, NatsServerError, Scope.Scope> =>
  Effect.gen(function*() {
    const binary = o.binary ?? locate()
    const port = o.port ?? (yield* freePort)
    if (binary === undefined || !isExecutable(binary)) {
      return yield* new NatsServerError({ binary: binary ?? "nats-server", port, reason: "NotFound", message: `nats-server not found on PATH (nor in /usr/sbin): install it (Debian: apt-get install nats-server) or pass its path` })
    }
    yield* stopStale(o.storeDir)
    let log = ""
    const child = yield* Effect.acquireRelease(spawnServer(binary, o, port), stop)
    child.stderr?.on("data", (d: Buffer) => {
      log = (log + d.toString("utf8")).slice(-4000)
    })
    yield* waitReady(child, binary, port, () => log)
    return { url: `nats://127.0.0.1:${port}`, port, storeDir: o.storeDir, process: child }
  })
