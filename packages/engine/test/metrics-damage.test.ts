/**
 * A damaged line in the middle of `metrics.jsonl` (not a torn tail) stops `resume` and `report` with an
 * error naming the file and the line, and the file is left byte for byte as it was.
 */
import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import * as Run from "../src/Run.js"
import { run, runFail } from "./helpers.js"
import { tinyRecipe } from "./support/recipes.js"

describe("a bad line in the middle of metrics.jsonl", () => {
  it("is an error naming file and line for resume and report, and nothing is truncated", async () => {
    const { file } = tinyRecipe("metrics-damage")
    const { dir } = await run(Run.run(file, { log: () => {} }))
    // As if the run had stopped after its second step: resume continues from step 2.
    writeFileSync(join(dir.checkpoints, "latest"), "step-000002\n")
    const lines = readFileSync(dir.metrics, "utf8").split("\n")
    lines[1] = lines[1].slice(0, 10)
    const damaged = lines.join("\n")
    writeFileSync(dir.metrics, damaged)

    const resumed = (await runFail(Run.resume(dir.root, { log: () => {} }))) as { _tag: string; message: string }
    expect(resumed._tag).toBe("MetricsFileError")
    expect(resumed.message).toContain(`${dir.metrics}:2:`)
    expect(readFileSync(dir.metrics, "utf8")).toBe(damaged)

    const reported = (await runFail(Run.report(dir.root))) as { _tag: string; message: string }
    expect(reported._tag).toBe("MetricsFileError")
    expect(reported.message).toContain(`${dir.metrics}:2:`)
    expect(readFileSync(dir.metrics, "utf8")).toBe(damaged)
  }, 120_000)
})
