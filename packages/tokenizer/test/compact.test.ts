import { get_encoding } from "@dqbd/tiktoken"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { Compact, Encoding, Tokenizer, type Codec } from "../src/index.js"
import { run, runFail } from "./helpers.js"

// Short math texts, like the arithmetic corpus the demo builds its vocabulary from.
const corpus = Array.from({ length: 2000 }, (_, i) => {
  const a = (i * 37) % 1000, b = (i * 91) % 100
  return `What is ${a} + ${b}? <think>${a} + ${b} = ${a + b}</think><answer>${a + b}</answer> Tom has ${b} apples and buys ${a} more.`
})

const bases: ReadonlyArray<Encoding.StandardName> = ["cl100k_base", "o200k_base", "r50k_base"]
const vocabs = new Map(bases.map((base) => [base, Compact.build({ base, corpus, size: 512 })]))
const codecs: Array<Codec> = []
afterAll(() => codecs.forEach((c) => c.free()))
const open = (v: Compact.Vocab) => {
  const c = Tokenizer.makeCompact(v)
  codecs.push(c)
  return c
}

describe("Compact.build", () => {
  it("keeps all 256 bytes, the requested size, base order, and control tokens right after the ranks", () => {
    for (const [base, v] of vocabs) {
      const m = v.manifest
      expect(m.size).toBe(512)
      expect(m.ordinary).toBe(512 - Encoding.CONTROL_TEXTS.length)
      expect(m.base).toBe(base)
      const sorted = [...m.baseIds].sort((a, b) => a - b)
      expect(m.baseIds).toEqual(sorted)
      expect(new Set(m.baseIds).size).toBe(m.baseIds.length)
      const tokens = Encoding.baseRanks(base).tokens
      const singles = new Set(m.baseIds.map((r) => Buffer.from(tokens[r], "base64")).filter((b) => b.length === 1).map((b) => b[0]))
      expect(singles.size).toBe(256)
      expect(Object.values(m.specialTokens).sort((a, b) => a - b)).toEqual(Encoding.CONTROL_TEXTS.map((_, i) => m.ordinary + i))
      const c = open(v)
      expect(c.vocabSize).toBe(512)
    }
  })

  it("decoding a compact id gives the same text (bytes) as decoding its base id, for every kept token", () => {
    for (const [base, v] of vocabs) {
      const c = open(v)
      const b = get_encoding(base)
      try {
        v.manifest.baseIds.forEach((baseId, id) => {
          expect(Buffer.from(c.decodeBytes(Int32Array.of(id)).bytes)).toEqual(Buffer.from(b.decode_single_token_bytes(baseId)))
        })
      } finally {
        b.free()
      }
    }
  })

  it("wherever the base's tokens of a text are all kept, the compact encoding is the base encoding renumbered", () => {
    // Each kept token came with its whole merge path, so BPE takes the base's path on such text.
    for (const [base, v] of vocabs) {
      const c = open(v)
      const b = Tokenizer.makeStandard(base)
      codecs.push(b)
      const toCompact = new Map(v.manifest.baseIds.map((r, i) => [r, i]))
      const texts = [...corpus.slice(0, 200), ...corpus.slice(0, 200).flatMap((t) => t.split(/(?= )/))]
      let covered = 0
      for (const t of texts) {
        const baseIds = Array.from(b.encode(t))
        if (!baseIds.every((r) => toCompact.has(r))) continue
        covered++
        expect(Array.from(c.encode(t))).toEqual(baseIds.map((r) => toCompact.get(r)))
      }
      expect(covered).toBeGreaterThan(1000)
    }
  })

  it("compresses the corpus far better than bytes and round-trips it", () => {
    for (const v of vocabs.values()) {
      const c = open(v)
      let bytes = 0, ids = 0
      for (const t of corpus.slice(0, 300)) {
        const e = c.encode(t)
        expect(c.decode(e)).toEqual({ text: t, incomplete: false })
        expect(e.every((id) => id < v.manifest.ordinary)).toBe(true)
        bytes += Buffer.byteLength(t)
        ids += e.length
      }
      expect(bytes / ids).toBeGreaterThan(2.5)
    }
  })

  it("control tokens in corpus text stay data; encodeTrusted parses them", () => {
    const c = open(vocabs.get("cl100k_base")!)
    const ids = c.encode("<think>1</think><|im_end|><|endoftext|>")
    expect(ids.every((id) => id < c.ordinary)).toBe(true)
    expect(Array.from(c.encodeTrusted("<think>1</think>")).filter((id) => id >= c.ordinary)).toEqual([c.specialIds.think, c.specialIds.thinkEnd])
  })

  it("fewer ids when the corpus uses fewer tokens; a size below 256 bytes + controls is refused", () => {
    const v = Compact.build({ base: "cl100k_base", corpus: ["aaa"], size: 4096 })
    expect(v.manifest.size).toBeLessThan(300)
    expect(() => Compact.build({ base: "cl100k_base", corpus, size: 100 })).toThrow(RangeError)
  })
})

describe("Compact.build with splitDigits", () => {
  it("encodes every number one digit per token and still round-trips", () => {
    const v = Compact.build({ base: "cl100k_base", corpus, size: 512, splitDigits: true })
    expect(v.manifest.splitDigits).toBe(true)
    const c = open(v)
    const ids = c.encode("What is 472 + 1058?")
    const pieces = Array.from(ids, (id) => c.decode(Int32Array.of(id)).text)
    expect(pieces.filter((p) => /[0-9]/.test(p))).toEqual(["4", "7", "2", "1", "0", "5", "8"])
    for (const text of corpus.slice(0, 50)) expect(c.decode(c.encode(text)).text).toBe(text)
    // Without it, cl100k keeps multi-digit chunks.
    const plain = vocabs.get("cl100k_base")!
    const p = open(plain)
    expect(p.encode("472").length).toBeLessThan(3)
  })
})

describe("Compact.save / load", () => {
  const v = vocabs.get("cl100k_base")!
  const fresh = async () => {
    const dir = mkdtempSync(join(tmpdir(), "r1flow-compact-"))
    await run(Compact.save(dir, v))
    return dir
  }

  it("round-trips through an ordinary tiktoken ranks file and a manifest", async () => {
    const dir = await fresh()
    const lines = readFileSync(join(dir, Compact.RANKS_FILE), "utf8").trimEnd().split("\n")
    expect(lines[0]).toMatch(/^[A-Za-z0-9+/]+=* 0$/)
    expect(lines.length).toBe(v.manifest.ordinary)
    for (const path of [dir, join(dir, Compact.MANIFEST_FILE)]) {
      const loaded = await run(Compact.load(path))
      expect(loaded).toEqual(v)
    }
    const c = open(await run(Compact.load(dir)))
    expect(Array.from(c.encode(corpus[7]))).toEqual(Array.from(open(v).encode(corpus[7])))
  })

  it("a tampered ranks file is a CompactVocabError naming it", async () => {
    const dir = await fresh()
    const file = join(dir, Compact.RANKS_FILE)
    writeFileSync(file, readFileSync(file, "utf8").replace(/\n[^\n]*\n$/, "\n"))
    const err = await runFail(Compact.load(dir))
    expect(err).toMatchObject({ _tag: "CompactVocabError", file })
    expect(err.message).toMatch(/SHA-256/)
  })

  it("a bad manifest is a CompactVocabError naming it", async () => {
    const dir = await fresh()
    const file = join(dir, Compact.MANIFEST_FILE)
    writeFileSync(file, "{ not json")
    expect(await runFail(Compact.load(dir))).toMatchObject({ _tag: "CompactVocabError", file, message: expect.stringMatching(/not valid JSON/) })
    writeFileSync(file, JSON.stringify({ ...v.manifest, size: "big" }))
    expect(await runFail(Compact.load(dir))).toMatchObject({ file, message: expect.stringMatching(/not a compact vocabulary manifest/) })
    writeFileSync(file, JSON.stringify({ ...v.manifest, size: v.manifest.size + 1 }))
    expect(await runFail(Compact.load(dir))).toMatchObject({ file, message: expect.stringMatching(/size/) })
  })

  it("a ranks file that lacks a byte is refused even when the hash matches", async () => {
    const dir = await fresh()
    const lines = v.ranks.split("\n").filter((l) => l !== "")
    const dropped = lines.filter((l) => Buffer.from(l.split(" ")[0], "base64").length !== 1 || Buffer.from(l.split(" ")[0], "base64")[0] !== 0x41)
    const ranks = dropped.map((l, i) => `${l.split(" ")[0]} ${i}\n`).join("")
    const sha256 = (await import("node:crypto")).createHash("sha256").update(ranks).digest("hex")
    const m = { ...v.manifest, ordinary: dropped.length, size: dropped.length + 7, baseIds: v.manifest.baseIds.slice(1), sha256,
      specialTokens: Object.fromEntries(Encoding.CONTROL_TEXTS.map((t, i) => [t, dropped.length + i])) }
    writeFileSync(join(dir, Compact.RANKS_FILE), ranks)
    writeFileSync(join(dir, Compact.MANIFEST_FILE), JSON.stringify(m))
    expect(await runFail(Compact.load(dir))).toMatchObject({ file: join(dir, Compact.RANKS_FILE), message: expect.stringMatching(/255 of the 256/) })
  })
})
