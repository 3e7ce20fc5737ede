/**
 * The demo, shortened: the built-in r1-zero recipe at the demo's model shape through every stage (pretrain,
 * eval, GRPO with generation and an eval inside it, checkpoints, final eval), in a child process as a user
 * runs it, once on the GEMM the machine offers (OpenBLAS when installed) and once on the addon's own
 * (`R1FLOW_NO_BLAS=1`). The native kernels' pool race showed only in runs like this one, never in unit tests.
 */
import { existsSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { engine, engineRoot, tempDir } from "./support/launch.js"

const recipe = join(engineRoot, "recipes", "r1-zero.json")

// The shortening, shared with tools/scripts/sanitize.mjs (which runs the same under ASan + UBSan).
const shortened = JSON.parse(readFileSync(join(engineRoot, "../../tools/scripts/smoke-overrides.json"), "utf8")) as Array<string>
const overrides = (runsDir: string) => [`runsDir=${runsDir}`, ...shortened]

const smoke = (env: Record<string, string>) =>
  engine({ command: "run", arg: recipe, overrides: overrides(tempDir("smoke")), log: true }, { env, timeout: 300_000 })

describe("the demo recipe, shortened, through every stage", () => {
  for (const [label, env] of [["the machine's GEMM", {}], ["the addon's own GEMM (R1FLOW_NO_BLAS=1)", { R1FLOW_NO_BLAS: "1" }]] as const) {
    it(`runs to the end on ${label}`, () => {
      const r = smoke(env)
      // A signal (the old segfault) leaves status null: say which.
      expect(r.signal, `${r.stdout}\n${r.stderr}`).toBeNull()
      expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0)
      const dir = r.dir ?? ""
      const backendLine = /backend: .*/.exec(r.stdout)?.[0] ?? ""
      console.log(`${label}: ${backendLine}`)
      if (label.includes("NO_BLAS")) expect(backendLine).toMatch(/own SIMD GEMM \(no BLAS: R1FLOW_NO_BLAS is set\)/)
      for (const f of ["manifest.json", "metrics.jsonl", "summary.json", "evals/base.json", "evals/final.json", "checkpoints/latest"]) expect(existsSync(join(dir, f)), f).toBe(true)
      const steps = readFileSync(join(dir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { stage?: string })
      expect(steps.length).toBeGreaterThanOrEqual(44)
      const summary = JSON.parse(readFileSync(join(dir, "summary.json"), "utf8")) as Record<string, unknown>
      expect(JSON.stringify(summary)).toMatch(/final/)
    }, 300_000)
  }
})
