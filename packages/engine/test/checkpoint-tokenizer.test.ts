// A run started from another run's checkpoint (`model.checkpoint`) with a compact tokenizer reads that run's
// vocabulary: one learned anew from its own data would give the checkpoint's embedding rows other tokens.
import { Backend } from "@r1flow/backend"
import { cpSync, readFileSync, readdirSync } from "node:fs"
import { join } from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import * as Run from "../src/Run.js"
import { run, runFail, tempDir, tinyOverrides } from "./helpers.js"

beforeAll(async () => {
  await Backend.init()
})

const recipe = JSON.parse(readFileSync(Run.resolveRecipe("r1-zero"), "utf8"))
const vocabOf = (root: string) => Object.fromEntries(readdirSync(join(root, "tokenizer")).map((f) => [f, readFileSync(join(root, "tokenizer", f), "utf8")]))
const policyOf = (root: string) => join(root, "checkpoints", "latest") // a file naming the newest step

describe("model.checkpoint with a compact tokenizer", () => {
  it("reads the checkpoint's run vocabulary, not one learned from the new run's other data; refuses a checkpoint outside a run folder", async () => {
    const runs = tempDir("ckpt-vocab")
    const first = await run(Run.run(Run.resolveRecipe("r1-zero"), { overrides: [...tinyOverrides(recipe, runs), "stages.0.config.steps=1"], log: () => {} }))
    const step = readFileSync(policyOf(first.dir.root), "utf8").trim()
    const checkpoint = join(first.dir.checkpoints, step, "policy")
    // Other data (multiplication, 3 digits, another corpus size) learns another vocabulary; one eval stage.
    const base = [...tinyOverrides(recipe, runs).filter((o) => !o.startsWith("stages.")), "task.ops=[\"*\"]", "task.digits=[3,3]", "corpus.count=40",
      "stages=[{\"stage\":\"eval\",\"name\":\"again\",\"config\":{\"samples\":1,\"sampling\":{\"maxNewTokens\":4,\"temperature\":1}}}]"]
    const fresh = await run(Run.run(Run.resolveRecipe("r1-zero"), { overrides: base, log: () => {} }))
    expect(vocabOf(fresh.dir.root), "the other data learns another vocabulary (else this test shows nothing)").not.toEqual(vocabOf(first.dir.root))
    const lines: Array<string> = []
    const second = await run(Run.run(Run.resolveRecipe("r1-zero"), { overrides: [...base, `model.checkpoint=${checkpoint}`], log: (l) => lines.push(l) }))
    expect(vocabOf(second.dir.root)).toEqual(vocabOf(first.dir.root))
    expect(lines.join("\n")).toContain(`compact vocabulary of ${first.dir.root}`)

    const loose = join(tempDir("loose-ckpt"), "policy")
    cpSync(checkpoint, loose, { recursive: true })
    const err = await runFail(Run.run(Run.resolveRecipe("r1-zero"), { overrides: [...base, `model.checkpoint=${loose}`], log: () => {} }))
    expect(String((err as { message?: string }).message)).toContain(`${loose}: key model.checkpoint: not inside an r1flow run folder`)
  }, 180_000)
})
