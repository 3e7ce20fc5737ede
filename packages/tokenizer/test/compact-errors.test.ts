import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { Compact } from "../src/index.js"
import { run, runFail } from "./helpers.js"

const vocab = Compact.build({ base: "cl100k_base", corpus: ["What is 12 + 30? The answer is 42."], size: 300 })
const fresh = async () => {
  const dir = mkdtempSync(join(tmpdir(), "r1flow-compact-errors-"))
  await run(Compact.save(dir, vocab))
  return dir
}

describe("CompactVocabError messages name the file at fault", () => {
  it("a tampered ranks file, a manifest that is not JSON, not a manifest or inconsistent: the message starts with the file", async () => {
    const dir = await fresh()
    const ranks = join(dir, Compact.RANKS_FILE)
    const manifest = join(dir, Compact.MANIFEST_FILE)
    writeFileSync(ranks, readFileSync(ranks, "utf8").replace(/\n[^\n]*\n$/, "\n"))
    expect((await runFail(Compact.load(dir))).message).toMatch(new RegExp(`^${ranks}: SHA-256`))
    writeFileSync(manifest, "{ not json")
    expect((await runFail(Compact.load(dir))).message).toMatch(new RegExp(`^${manifest}: not valid JSON`))
    writeFileSync(manifest, JSON.stringify({ ...vocab.manifest, size: "big" }))
    expect((await runFail(Compact.load(dir))).message).toMatch(new RegExp(`^${manifest}: not a compact vocabulary manifest`))
    writeFileSync(manifest, JSON.stringify({ ...vocab.manifest, size: vocab.manifest.size + 1 }))
    expect((await runFail(Compact.load(dir))).message).toMatch(new RegExp(`^${manifest}: size`))
  })

  it("a manifest that is not UTF-8 is refused naming the file and byte, never read with U+FFFD", async () => {
    const dir = await fresh()
    const manifest = join(dir, Compact.MANIFEST_FILE)
    const text = readFileSync(manifest)
    writeFileSync(manifest, Buffer.concat([text.subarray(0, 1), Buffer.from([0xff]), text.subarray(1)]))
    const err = await runFail(Compact.load(dir))
    expect(err).toMatchObject({ _tag: "CompactVocabError", file: manifest })
    expect(err.message).toMatch(new RegExp(`^${manifest}: line 1, byte 2: invalid UTF-8`))
  })

  it("a directory that cannot be written names it", async () => {
    const under = join(await fresh(), Compact.MANIFEST_FILE, "vocab") // a folder inside a file
    const err = await runFail(Compact.save(under, vocab))
    expect(err.message).toMatch(new RegExp(`^${under}: cannot write`))
  })
})
