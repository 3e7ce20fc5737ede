/**
 * Hostile code: each case is scored without harm to the host and within its limits. A case "escapes"
 * when it scores anything but what a contained run must score (a read of a host file passes its test),
 * or when its host-side check fails: it wrote outside its working folder, reached a listener on the
 * host's 127.0.0.1, killed a process outside the sandbox, or left a process running after its run.
 */
import { spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { existsSync, mkdtempSync, chmodSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs"
import { createServer, type Server } from "node:net"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { Conformance } from "@r1flow/core"
import { Effect, Schema } from "effect"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import * as CodeReward from "../src/CodeReward.js"
import type * as Sandbox from "../src/Sandbox.js"
import { answer, probe } from "./helpers.js"

const status = probe()
const available = "sandbox" in status

interface Case {
  readonly name: string
  readonly language: "js" | "python"
  readonly code: string
  readonly tests: ReadonlyArray<Record<string, string>>
  /** The score it must get (default 0: every hostile program fails its test). */
  readonly expect?: number
  /** Extra host-side escape check, run after scoring (true = escaped). */
  readonly escaped?: () => boolean
}

describe.skipIf(!available)("hostile code suite", () => {
  const sandbox = available ? status.sandbox : (undefined as never)
  const hasPython = available && sandbox.languages.has("python")
  const marker = 90_000 + Math.floor(Math.random() * 9_000)
  const token = randomBytes(8).toString("hex")
  const project = resolve(__dirname, "..")
  const hostDir = mkdtempSync(join(tmpdir(), "r1flow-hostile-"))
  chmodSync(hostDir, 0o755)
  const secret = join(hostDir, "secret.txt")
  const secretText = `secret-${token}`
  writeFileSync(secret, secretText, { mode: 0o644 })
  const passwdLine = readFileSync("/etc/passwd", "utf8").split("\n")[0]
  const writeTargets = [join(hostDir, `w-${token}`), join(project, `escape-${token}`), `/tmp/escape-${token}`, `/usr/escape-${token}`]
  let server: Server
  let port = 0
  let connections = 0
  let sentinel: ReturnType<typeof spawn>
  const durations = new Map<string, number>()

  beforeAll(async () => {
    server = createServer((s) => {
      connections++
      s.destroy()
    })
    await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok))
    port = (server.address() as { port: number }).port
    // A process with the sandbox's own uid: only the PID namespace stands between it and kill(-1).
    sentinel = spawn("/bin/sleep", ["600"], { stdio: "ignore", ...(process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {}) })
  })
  afterAll(() => {
    server?.close()
    sentinel?.kill("SIGKILL")
    rmSync(hostDir, { recursive: true, force: true })
    for (const t of writeTargets) rmSync(t, { force: true })
  })

  const cases = (): Array<Case> => {
    const stdout = (s: string) => [{ stdout: s }]
    const js: Array<Case> = [
      { name: "infinite loop", language: "js", code: "while (true) {}", tests: stdout("") },
      { name: "infinite sleep", language: "js", code: "setInterval(() => {}, 1000)", tests: stdout("") },
      {
        name: "fork bomb (spawn loop)",
        language: "js",
        code: `const cp = require("child_process")\nfor (;;) { try { cp.spawn("/bin/sh", ["-c", "sleep ${marker}"], { detached: true, stdio: "ignore" }).unref() } catch {} }`,
        tests: stdout("")
      },
      { name: "fork bomb (shell)", language: "js", code: `require("child_process").execSync(":(){ :|:& };:", { shell: "/bin/sh", stdio: "ignore" })`, tests: stdout("") },
      {
        name: "daemon outliving its run",
        language: "js",
        code: `require("child_process").spawn("/bin/sh", ["-c", "sleep ${marker}"], { detached: true, stdio: "ignore" }).unref()\nconsole.log("ok")`,
        tests: stdout("ok"),
        // It is a correct program; the check is that its daemon does not outlive the run (leftovers).
        expect: 1
      },
      { name: "memory bomb (buffers)", language: "js", code: "const a = []\nfor (;;) a.push(Buffer.alloc(1 << 26, 1))", tests: stdout("") },
      { name: "memory bomb (heap)", language: "js", code: "const a = []\nfor (;;) a.push(new Array(1e6).fill(1.5))", tests: stdout("") },
      { name: "1 GB stdout", language: "js", code: "const s = 'x'.repeat(1 << 16)\nfor (let i = 0; i < 16384; i++) require('fs').writeSync(1, s)", tests: stdout("") },
      { name: "1 GB stderr", language: "js", code: "const s = 'x'.repeat(1 << 16)\nfor (let i = 0; i < 16384; i++) require('fs').writeSync(2, s)", tests: stdout("") },
      { name: "fill the disk", language: "js", code: "const fs = require('fs')\nfor (let i = 0; ; i++) fs.writeFileSync('f' + i, Buffer.alloc(1 << 24))", tests: stdout("") },
      { name: "read /etc/passwd", language: "js", code: "console.log(require('fs').readFileSync('/etc/passwd', 'utf8').split('\\n')[0])", tests: stdout(passwdLine) },
      { name: "read the project's files", language: "js", code: `console.log(JSON.parse(require('fs').readFileSync(${JSON.stringify(join(project, "package.json"))}, 'utf8')).name)`, tests: stdout("@r1flow/reward-code") },
      { name: "read a host file by path", language: "js", code: `console.log(require('fs').readFileSync(${JSON.stringify(secret)}, 'utf8'))`, tests: stdout(secretText) },
      { name: "read the trainer's environment", language: "js", code: `console.log(require('fs').readFileSync('/proc/1/environ', 'utf8').includes('HOME=/root') ? 'leak' : 'none', process.env.PATH)`, tests: stdout("leak /usr/bin:/bin") },
      {
        name: "write outside the working folder",
        language: "js",
        code: `const fs = require('fs')\nfor (const p of ${JSON.stringify(writeTargets)}) { try { fs.writeFileSync(p, 'x') } catch {} }\nprocess.exit(1)`,
        tests: stdout(""),
        escaped: () => writeTargets.some((t) => existsSync(t))
      },
      {
        name: "socket to a host listener on 127.0.0.1",
        language: "js",
        code: `const s = require('net').connect(${"PORT"}, '127.0.0.1', () => { console.log('connected'); s.end() })\ns.on('error', (e) => { console.error(e.code); process.exit(1) })`,
        tests: stdout("connected"),
        escaped: () => connections > 0
      },
      {
        name: "kill the parent process",
        language: "js",
        code: `for (const pid of [process.ppid, ${process.pid}, ${"SENTINEL"}]) { try { process.kill(pid, 'SIGKILL') } catch {} }\ntry { process.kill(-1, 'SIGKILL') } catch {}\nconsole.log('done')`,
        tests: stdout("never"),
        escaped: () => sentinel.exitCode !== null || sentinel.signalCode !== null
      },
      { name: "process.exit(0) before the tests print", language: "js", code: "process.exit(0)\nfunction add(a, b) { return a + b }", tests: [{ assert: "if (add(1, 2) !== 3) throw new Error('wrong')" }] },
      { name: "process.exit(0) on an i/o test", language: "js", code: "process.exit(0)", tests: stdout("3") },
      { name: "user namespace inside the sandbox", language: "js", code: `require('child_process').execSync('/usr/bin/unshare -r id', { stdio: 'inherit' })`, tests: stdout("uid=0(root) gid=0(root) groups=0(root)") }
    ]
    const py: Array<Case> = [
      { name: "python infinite loop", language: "python", code: "while True: pass", tests: stdout("") },
      { name: "python fork bomb", language: "python", code: "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass", tests: stdout("") },
      { name: "python memory bomb", language: "python", code: "x = bytearray(8 * 1024 ** 3)", tests: stdout("") },
      { name: "python 1 GB stdout", language: "python", code: "import sys\ns = 'x' * 65536\nfor _ in range(16384): sys.stdout.write(s)", tests: stdout("") },
      { name: "python read /etc/passwd", language: "python", code: "print(open('/etc/passwd').readline().strip())", tests: stdout(passwdLine) },
      {
        name: "python socket to host listener",
        language: "python",
        code: `import socket\nsocket.create_connection(("127.0.0.1", ${"PORT"}), timeout=2)\nprint("connected")`,
        tests: stdout("connected"),
        escaped: () => connections > 0
      },
      { name: "python sys.exit(0) before the tests", language: "python", code: "import sys\nsys.exit(0)", tests: [{ assert: "assert add(1, 2) == 3" }] }
    ]
    return hasPython ? [...js, ...py] : js
  }

  const leftovers = (): Array<string> =>
    readdirSync("/proc").filter((d) => /^\d+$/.test(d)).flatMap((pid) => {
      try {
        const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ")
        return cmd.includes(`sleep ${marker}`) ? [`${pid}: ${cmd}`] : []
      } catch {
        return []
      }
    })

  test("every case is scored without harm and within its time limit; 0 escapes", async () => {
    const limits = { cpuSeconds: 2, wallMs: 5_000 }
    const config = Schema.decodeUnknownSync(CodeReward.Config)({ concurrency: 4, queueTimeoutMs: 120_000, limits })
    const list = cases().map((c) => ({ ...c, code: c.code.replace("PORT", String(port)).replace("SENTINEL", String(sentinel.pid)) }))
    // Time each run inside the pool (queueing excluded) by its program's solution text.
    const timed: Sandbox.Sandbox = {
      ...sandbox,
      run: (program, l) => {
        const key = Object.entries(program.files).find(([n]) => n.startsWith("solution"))![1]
        return Effect.suspend(() => {
          const started = performance.now()
          return Effect.tap(sandbox.run(program, l), () => Effect.sync(() => durations.set(key, performance.now() - started)))
        })
      }
    }
    const reward = CodeReward.makeWith(config, timed)
    // Two correct controls run alongside the bombs: the limits of one run must not starve another.
    const controls: Array<Conformance.Row> = [
      { completion: answer("js", "console.log(require('fs').readFileSync(0, 'utf8').trim().split(' ').map(Number).reduce((a, b) => a + b))"), metadata: { tests: [{ stdin: "2 3", stdout: "5" }] } },
      { completion: answer("js", "function add(a, b) { return a + b }"), metadata: { tests: [{ assert: "if (add(1, 2) !== 3) throw new Error('wrong')" }] } }
    ]
    const started = performance.now()
    const scores = await Conformance.score(reward, [...list.map((c) => ({ completion: answer(c.language, c.code), metadata: { tests: c.tests } })), ...controls])
    const elapsed = performance.now() - started
    await new Promise((r) => setTimeout(r, 300))
    const left = leftovers()

    const report = list.map((c, i) => {
      const ms = [...durations].filter(([k]) => k.includes(c.code)).reduce((m, [, v]) => Math.max(m, v), 0)
      const escaped = scores[i] !== (c.expect ?? 0) || (c.escaped?.() ?? false)
      return { case: c.name, score: scores[i], ms: Math.round(ms), escaped }
    })
    const escapes = report.filter((r) => r.escaped).length + (left.length > 0 ? 1 : 0)
    console.log(`\nhostile suite: ${report.length} cases, ${escapes} escapes, ${Math.round(elapsed)} ms total (pool of 4)\n` +
      report.map((r) => `  ${r.escaped ? "ESCAPED" : "ok     "} ${r.case.padEnd(42)} score=${r.score} run=${r.ms} ms`).join("\n") +
      `\n  leftover processes: ${left.length}\n  stats: ${JSON.stringify(reward.stats())}\n`)

    expect(scores.slice(list.length), "correct controls still score 1").toEqual([1, 1])
    expect(left, "no process outlives its run").toEqual([])
    expect(report.filter((r) => r.escaped), "escapes").toEqual([])
    // Within its limit: the wall clock plus the kill and the drain of its pipes. What this proves is that the
    // group kill happens (without it the sleeps and loops run forever), not a speed: a python fork bomb's kill
    // and drain took 0.4 s on a loaded 2-core machine, and CI runs other suites beside this one, so the
    // margin is generous (a CI run once failed a 1.5 s margin).
    for (const r of report) expect(r.ms, r.case).toBeLessThan(limits.wallMs + 5_000)
    expect(reward.stats()).toMatchObject({ sandboxErrors: 0, saturated: 0, infraNanRows: 0 })
    expect(process.kill(process.pid, 0)).toBe(true)
  }, 120_000)
})
