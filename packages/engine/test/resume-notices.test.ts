/**
 * What a run says and leaves when things are not as expected: errors caught before the first stage
 * leave no run directory; a recipe file edited since the run started is named key by key on resume
 * (the run continues with the config it started with, recorded in the manifest); resuming a finished
 * run says so and changes nothing.
 */
import { createHash } from "node:crypto"
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { join, relative } from "node:path"
import { describe, expect, it } from "vitest"
import * as Run from "../src/Run.js"
import { run, runFail } from "./helpers.js"
import { tinyRecipe } from "./support/recipes.js"

/** Every file under `root` with its sha256. */
const tree = (root: string): Record<string, string> => {
  const out: Record<string, string> = {}
  const walk = (d: string) => {
    for (const f of readdirSync(d)) {
      const p = join(d, f)
      if (statSync(p).isDirectory()) walk(p)
      else out[relative(root, p)] = createHash("sha256").update(readFileSync(p)).digest("hex")
    }
  }
  walk(root)
  return out
}

describe("errors caught up front", () => {
  it("leave no run directory: data that does not fit the model, a missing starting checkpoint", async () => {
    for (const [patch, tag] of [
      [{ model: { dModel: 16, nLayers: 1, nHeads: 2, nKvHeads: 1, dFf: 32, maxSeqLen: 16 } }, "DataError"],
      [{ model: { dModel: 16, nLayers: 1, nHeads: 2, nKvHeads: 1, dFf: 32, maxSeqLen: 128, checkpoint: "/nonexistent/step-000001/policy" } }, undefined]
    ] as const) {
      const { file, runs } = tinyRecipe("upfront", patch)
      const lines: Array<string> = []
      const error = (await runFail(Run.run(file, { log: (l) => lines.push(l) }))) as { _tag: string }
      if (tag !== undefined) expect(error._tag).toBe(tag)
      expect(lines.filter((l) => l.startsWith("── stage"))).toEqual([])
      expect(existsSync(runs) ? readdirSync(runs) : []).toEqual([])
    }
  }, 120_000)
})

describe("resume", () => {
  it("names the recipe keys edited since the run started and continues with the recorded config; --set overrides are not edits", async () => {
    const { file } = tinyRecipe("recipe-edit")
    const { dir } = await run(Run.run(file, { overrides: ["seed=7"], log: () => {} }))
    const metrics = readFileSync(dir.metrics, "utf8")
    writeFileSync(join(dir.checkpoints, "latest"), "step-000002\n")
    const quiet: Array<string> = []
    await run(Run.resume(dir.root, { log: (l) => quiet.push(l) }))
    expect(quiet.filter((l) => /recipe/.test(l) && /changed/.test(l))).toEqual([])

    const edited = JSON.parse(readFileSync(file, "utf8"))
    edited.stages[0].config.steps = 5
    edited.task.test = 3
    writeFileSync(file, JSON.stringify(edited))
    writeFileSync(join(dir.checkpoints, "latest"), "step-000002\n")
    const lines: Array<string> = []
    await run(Run.resume(dir.root, { log: (l) => lines.push(l) }))
    const notice = lines.find((l) => l.includes("has changed since this run started"))
    expect(notice, lines.join("\n")).toBeDefined()
    expect(notice).toContain(file)
    expect(notice).toContain("stages[0].config.steps, task.test")
    expect(notice).toContain("manifest.json")
    // The recorded config ran: 3 pretrain steps, the same metrics as before.
    expect(readFileSync(dir.metrics, "utf8")).toBe(metrics)
  }, 120_000)

  it("of a finished run says it is finished, exits without error and changes nothing", async () => {
    const { file } = tinyRecipe("finished")
    const { dir } = await run(Run.run(file, { log: () => {} }))
    const before = tree(dir.root)
    const lines: Array<string> = []
    const result = await run(Run.resume(dir.root, { log: (l) => lines.push(l) }))
    expect(lines.some((l) => /is finished/.test(l) && l.includes("all 2 stages"))).toBe(true)
    expect(lines.some((l) => /stage 3\/2/.test(l))).toBe(false)
    expect(result.evals.map((e) => e.name)).toEqual(["final"])
    expect(tree(dir.root)).toEqual(before)
  }, 120_000)
})
