/** What the distributed tests share: the nats-server binary, a slow reward with variance, background runs, waits. */
import { spawn, type ChildProcess } from "node:child_process"
import { accessSync, constants, existsSync, readFileSync } from "node:fs"
import { createServer } from "node:net"
import { delimiter, join } from "node:path"
import { bin, effectUrl } from "./launch.js"

/** Debian's nats-server (PATH, /usr/sbin, /usr/local/sbin), or undefined: the tests then skip. */
export const natsServer = [...(process.env["PATH"] ?? "").split(delimiter), "/usr/sbin", "/usr/local/sbin"].filter((d) => d !== "").map((d) => join(d, "nats-server")).find((p) => {
  try {
    accessSync(p, constants.X_OK)
    return true
  } catch {
    return false
  }
})

/** The message a test file prints when it skips for want of nats-server. */
export const skipNotice = (file: string): void => console.warn(`${file}: nats-server not found (PATH, /usr/sbin); skipping (Debian: apt-get install nats-server)`)

/**
 * A reward with variance (completion length), so every update moves the weights, and slow enough (`config.ms`
 * of busy wait per call) that a worker killed after a group is most likely inside the next one.
 */
export const slowChars = `import { Schema } from ${JSON.stringify(effectUrl)}
export default { kind: "reward", name: "chars", version: "1.0.0", description: "completion length, slowly", config: Schema.Struct({ ms: Schema.Number }),
  make: (c) => ({ score: (input) => { const t = Date.now(); while (Date.now() - t < c.ms) {} return Float32Array.from(input.completions, (x) => x.length) } }) }`

/** `r1flow <args>` in the background; `done` resolves with its status and output once it exits. */
export const background = (args: Array<string>, env: Record<string, string> = {}) => {
  let out = ""
  const child: ChildProcess = spawn(process.execPath, [bin, ...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } })
  child.stdout?.on("data", (d: Buffer) => (out += d.toString("utf8")))
  child.stderr?.on("data", (d: Buffer) => (out += d.toString("utf8")))
  const done = new Promise<{ status: number | null; signal: NodeJS.Signals | null; out: string }>((resolve) => child.once("exit", (status, signal) => resolve({ status, signal, out })))
  return { child, output: () => out, done }
}

/** The run directory a run printed. */
export const dirOf = (out: string) => {
  const m = /run directory: (\S+)/.exec(out)
  if (m === null) throw new Error(`no run directory in output:\n${out}`)
  return m[1]
}

/** Polls `ok` every 50 ms until it holds; throws after `ms`. */
export const waitFor = async (what: string, ok: () => boolean, ms = 120_000) => {
  const deadline = Date.now() + ms
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** A file's text, or "" while it does not exist. */
export const read = (path: string) => (existsSync(path) ? readFileSync(path, "utf8") : "")

/** A TCP port free on 127.0.0.1 just now. */
export const freePort = () => new Promise<number>((resolve) => {
  const srv = createServer()
  srv.listen(0, "127.0.0.1", () => {
    const a = srv.address()
    const port = typeof a === "object" && a !== null ? a.port : 0
    srv.close(() => resolve(port))
  })
})
