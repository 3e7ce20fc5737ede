/**
 * `r1flow eval` samples as R1 evaluates (k samples at a temperature, nucleus `--top-p`) and prints pass@1
 * over the k samples with cons@k; `--top-p` reaches the sampler (a tiny p keeps only the most likely
 * token, so it writes the greedy completions) and a p outside (0, 1] is refused before any work.
 */
import { readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { r1flow, tempRun, tinyRecipe } from "./support/launch.js"

/** The completions a standalone eval wrote (the newest file of `evals/standalone`). */
const completions = (stdout: string) => {
  const file = /written to (\S+)/.exec(stdout)![1]
  return (JSON.parse(readFileSync(file, "utf8")) as { samples: Array<{ completion: string }> }).samples.map((s) => s.completion)
}

describe("r1flow eval sampling flags", () => {
  it("--samples k --temperature 0.6 --top-p 0.95 prints pass@1 over k and cons@k; --top-p 1e-6 writes the greedy completions; --top-p 1.5 is refused", () => {
    const { file, runs } = tempRun("cli-eval-sampling", tinyRecipe({ name: "tiny-eval-sampling", seed: 3 }))
    const made = r1flow(["run", file])
    expect(made.status, made.stderr).toBe(0)
    const root = join(runs, readdirSync(runs)[0])

    const r1 = r1flow(["eval", root, "--samples", "3", "--temperature", "0.6", "--top-p", "0.95", "--limit", "8"])
    expect(r1.status, r1.stderr).toBe(0)
    expect(r1.stdout).toMatch(/accuracy \(pass@1 over 3\): \d+\.\d % {3}cons@3: \d+\.\d % {3}format: /)

    const greedy = r1flow(["eval", root, "--temperature", "0", "--limit", "8"])
    const nucleus = r1flow(["eval", root, "--temperature", "1", "--top-p", "0.000001", "--limit", "8"])
    const full = r1flow(["eval", root, "--temperature", "1", "--limit", "8"])
    for (const r of [greedy, nucleus, full]) expect(r.status, r.stderr).toBe(0)
    expect(completions(nucleus.stdout)).toEqual(completions(greedy.stdout))
    // Without the nucleus the same temperature samples other tokens: the flag, not the temperature, made them greedy.
    expect(completions(full.stdout)).not.toEqual(completions(greedy.stdout))

    const bad = r1flow(["eval", root, "--top-p", "1.5"])
    expect(bad.status).toBe(1)
    expect(bad.stderr).toContain("top-p 1.5: must be in (0, 1]")
  }, 200_000)
})
