#!/usr/bin/env node
/**
 * Runs the demo recipe many times and tabulates how each run ended: the check that a crash which shows once
 * in three runs is seen. Each entry of the plan is a group of runs started together (a group of two is each
 * run's CPU-heavy rival); `blas` runs on the machine's OpenBLAS, `own` on the addon's GEMM (R1FLOW_NO_BLAS=1).
 *
 *   node tools/scripts/demo-soak.mjs [--plan "1:blas,1:own 2:blas 2:own+yes …"] [--out soak.jsonl]
 *
 *   node tools/scripts/demo-soak.mjs --table soak.jsonl      the runs recorded so far, as a markdown table
 *
 * `+yes` adds a `yes > /dev/null` beside that group. Run it in a fresh clone after `npm ci && npm run demo`
 * (which builds the CLI). Each finished run is appended to --out at once, so an interrupted soak keeps its rows.
 */
import { spawn } from "node:child_process"
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { join, resolve } from "node:path"

const arg = (name, fallback) => {
  const i = process.argv.indexOf(name)
  return i > 0 ? process.argv[i + 1] : fallback
}
const plan = arg("--plan", "1:blas,1:own 2:blas,2:own 3:blas,3:own 1:blas,1:own 2:blas,2:own 3:blas,3:own 1:blas+yes 1:own+yes 2:blas+yes 2:own+yes 3:blas,3:own 1:blas,1:own")
const out = resolve(arg("--out", "soak.jsonl"))
const cli = resolve("packages/cli/bin/r1flow.mjs")
const logs = `${out}.logs`
mkdirSync(logs, { recursive: true })
let count = 0

/** One demo run; resolves with how it ended and what it measured. */
const demo = (seed, mode) =>
  new Promise((done) => {
    const t0 = Date.now()
    const logFile = join(logs, `${String(++count).padStart(2, "0")}-seed${seed}-${mode}.log`)
    const env = { ...process.env, R1FLOW_NO_BLAS: mode === "own" ? "1" : "0" }
    // A runs folder per run: runs started in the same second must not share a run directory.
    const runsDir = join(logs, `${String(count).padStart(2, "0")}-runs`)
    const child = spawn(process.execPath, [cli, "run", "r1-zero", "--set", `seed=${seed}`, "--set", `runsDir=${runsDir}`], { env, stdio: ["ignore", "pipe", "pipe"] })
    let log = ""
    child.stdout.on("data", (d) => (log += d))
    child.stderr.on("data", (d) => (log += d))
    child.on("exit", (status, signal) => {
      const dir = /run directory: (.+)/.exec(log)?.[1]?.trim()
      const summary = dir !== undefined && existsSync(join(dir, "summary.json")) ? JSON.parse(readFileSync(join(dir, "summary.json"), "utf8")) : undefined
      writeFileSync(logFile, log)
      done({ seed, mode, status, signal, wallS: (Date.now() - t0) / 1000, dir, log: logFile, summary })
    })
  })

/** The recorded runs as a markdown table (pretraining time from the log's stage line). */
const table = (file) => {
  const pct = (x) => (x === undefined ? "–" : `${(100 * x).toFixed(1)} %`)
  console.log("| # | seed | GEMM | beside | exit | wall | pretraining | held-out pass@1 before → after | format before → after |")
  console.log("|---|---|---|---|---|---|---|---|---|")
  readFileSync(file, "utf8").trim().split("\n").map((l) => JSON.parse(l)).forEach((r, i) => {
    const log = existsSync(r.log) ? readFileSync(r.log, "utf8") : ""
    const pre = /── pretrain done in ([\d.]+) s/.exec(log)?.[1]
    const evals = r.summary?.evals ?? []
    const base = evals.find((e) => e.name === "base"), final = evals.find((e) => e.name === "final")
    const exit = r.signal !== null ? `signal ${r.signal}` : `${r.status}`
    console.log(`| ${i + 1} | ${r.seed} | ${r.mode === "own" ? "own (R1FLOW_NO_BLAS=1)" : "OpenBLAS"} | ${r.beside} | ${exit} | ${(r.wallS / 60).toFixed(1)} min | ${pre ?? "–"} s | ${pct(base?.accuracy)} → ${pct(final?.accuracy)} | ${pct(base?.formatRate)} → ${pct(final?.formatRate)} |`)
  })
}
if (process.argv.includes("--table")) {
  table(resolve(arg("--table")))
  process.exit(0)
}

for (const group of plan.split(" ").filter((g) => g.length > 0)) {
  const yes = group.endsWith("+yes")
  const runs = group.replace(/\+yes$/, "").split(",").map((r) => r.split(":"))
  const rival = yes ? spawn("sh", ["-c", "exec yes > /dev/null"], { stdio: "ignore" }) : undefined
  const rows = await Promise.all(runs.map(([seed, mode]) => demo(Number(seed), mode)))
  rival?.kill("SIGKILL")
  for (const row of rows) {
    const beside = runs.length > 1 ? "another demo" : yes ? "yes > /dev/null" : "none"
    appendFileSync(out, JSON.stringify({ ...row, beside: yes && runs.length > 1 ? "another demo + yes" : beside }) + "\n")
    console.log(`seed ${row.seed} ${row.mode}: status ${row.status} signal ${row.signal} ${row.wallS.toFixed(0)} s`)
  }
}
