/**
 * The demo, shortened: the built-in r1-zero recipe at the demo's model shape through every stage (pretrain,
 * eval, GRPO with generation and an eval inside it, checkpoints, final eval), in a child process as a user
 * runs it, once on the GEMM the machine offers (OpenBLAS when installed) and once on the addon's own
 * (`R1FLOW_NO_BLAS=1`). The native kernels' pool race showed only in runs like this one, never in unit tests.
 */
import { spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { pathToFileURL } from "node:url"
import { describe, expect, it } from "vitest"

const require = createRequire(import.meta.url)
const engineRoot = dirname(require.resolve("@r1flow/engine/package.json"))
const engine = pathToFileURL(join(engineRoot, "dist", "index.js")).href
const effect = pathToFileURL(createRequire(join(engineRoot, "dist", "index.js")).resolve("effect")).href
const recipe = join(engineRoot, "recipes", "r1-zero.json")

// The shortening, shared with tools/scripts/sanitize.mjs (which runs the same under ASan + UBSan).
const shortened = JSON.parse(readFileSync(join(dirname(require.resolve("@r1flow/engine/package.json")), "../../tools/scripts/smoke-overrides.json"), "utf8")) as Array<string>
const overrides = (runsDir: string) => [`runsDir=${runsDir}`, ...shortened]

const smoke = (env: Record<string, string>) => {
  const runsDir = mkdtempSync(join(tmpdir(), "r1flow-smoke-"))
  const script = `
const { Effect } = await import(${JSON.stringify(effect)})
const { Run } = await import(${JSON.stringify(engine)})
Effect.runPromise(Run.run(${JSON.stringify(recipe)}, { overrides: ${JSON.stringify(overrides(runsDir))}, log: (l) => console.log(l) }))
  .then((r) => console.log("DIR " + r.dir.root), (e) => { console.error("FAILED " + (e._tag ?? "") + ": " + e.message); process.exit(3) })
`
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", timeout: 300_000, env: { ...process.env, ...env } })
  return { ...r, dir: /DIR (.+)/.exec(r.stdout)?.[1] }
}

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
