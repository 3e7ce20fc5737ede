/**
 * Resume across a change of maths (backend, kernel set or GEMM) is refused: the checkpoint records what
 * made it, and a resume on anything else would silently break the bitwise promise. `r1flow resume
 * --allow-backend-change` continues anyway, with a loud warning. The change is made with the switches a
 * user has: R1FLOW_NO_BLAS=1 (the addon's own GEMM) vs OpenBLAS where the machine has it, else
 * R1FLOW_NATIVE=0 vs the native kernels, else the cpu backend vs wasm.
 */
import { readdirSync, readFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { describe, expect, it } from "vitest"
import { bin, node, r1flow, tempRun, tinyRecipe } from "./support/launch.js"

/** What this machine offers, as the built kernels see it in a fresh process. */
const machine = (): { native: boolean; blas: string | null } => {
  const probe = `const { Native } = await import("@r1flow/kernels"); const l = Native.load(); console.log(JSON.stringify(l.ok ? { native: true, blas: l.addon.info().blas } : { native: false, blas: null }))`
  const r = node(probe, { cwd: dirname(bin), env: { R1FLOW_NO_BLAS: "0", R1FLOW_NATIVE: "1" } })
  return JSON.parse(r.stdout.trim()) as { native: boolean; blas: string | null }
}

/** The env the run starts under, the env it resumes under, and what the refusal must name for each. */
const toggle = (): { start: Record<string, string>; resume: Record<string, string>; was: string; now: string } => {
  const m = machine()
  if (m.blas !== null) return { start: { R1FLOW_NO_BLAS: "1" }, resume: { R1FLOW_NO_BLAS: "0" }, was: "own SIMD GEMM", now: "OpenBLAS" }
  if (m.native) return { start: { R1FLOW_NATIVE: "0" }, resume: { R1FLOW_NATIVE: "1" }, was: "native kernels off", now: "R1AdamW" }
  return { start: { R1FLOW_BACKEND: "cpu" }, resume: { R1FLOW_BACKEND: "wasm" }, was: "backend cpu", now: "backend wasm" }
}

describe("resume across a change of maths library", () => {
  it("is refused naming both, unless --allow-backend-change is given, which warns", () => {
    const t = toggle()
    const { file, runs } = tempRun("backend-change", tinyRecipe({ name: "tiny-gemm", seed: 4 }))
    const killed = r1flow(["run", file], { env: { ...t.start, R1FLOW_TEST_KILL_AT_CHECKPOINT: "2" } })
    expect(killed.signal, killed.stderr).toBe("SIGKILL")
    const dir = join(runs, readdirSync(runs)[0])
    const metrics = readFileSync(join(dir, "metrics.jsonl"))

    const refused = r1flow(["resume", dir], { env: t.resume })
    expect(refused.status, refused.stdout + refused.stderr).toBe(1)
    expect(refused.stderr).toContain("BackendChangeError")
    expect(refused.stderr).toContain(t.was)
    expect(refused.stderr).toContain(t.now)
    expect(refused.stderr).toContain("--allow-backend-change")
    expect(readFileSync(join(dir, "metrics.jsonl"))).toEqual(metrics)
    expect(readFileSync(join(dir, "checkpoints", "latest"), "utf8").trim()).toBe("step-000001")

    const allowed = r1flow(["resume", "--allow-backend-change", dir], { env: t.resume })
    expect(allowed.status, allowed.stderr).toBe(0)
    expect(allowed.stdout + allowed.stderr).toMatch(/WARNING: .*not be bitwise identical/)
    expect(readFileSync(join(dir, "summary.json"), "utf8")).toContain("final")
  }, 200_000)
})
