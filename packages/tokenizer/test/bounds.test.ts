import { get_encoding } from "@dqbd/tiktoken"
import { describe, expect, it } from "vitest"
import { Compact, Encoding, Segments, Template, Tokenizer } from "../src/index.js"

const MB = 1 << 20

/** One tokenizer per test, so a trapped WebAssembly instance cannot leak into the next test. */
const withCl100k = <A>(f: (c: ReturnType<typeof Tokenizer.makeStandard>) => A): A => {
  const c = Tokenizer.makeStandard("cl100k_base")
  try {
    return f(c)
  } finally {
    c.free()
  }
}

describe("over-long input", () => {
  it("a 1 MB word encodes, round-trips, and leaves the encoder usable and freeable", () => {
    withCl100k((c) => {
      const word = "a".repeat(MB)
      const ids = c.encode(word)
      expect(ids.length).toBeGreaterThan(0)
      expect(c.decode(ids)).toEqual({ text: word, incomplete: false })
      expect(Array.from(c.encode("hello world"))).toEqual([15339, 1917])
    })
  })

  it("a huge word inside a prompt, a run of spaces, digits, astral and CJK characters all encode and round-trip", () => {
    const n = MB / 4
    withCl100k((c) => {
      for (const text of [`What is ${"b".repeat(n)}?`, " ".repeat(n) + "x", "7".repeat(n), "😀".repeat(n / 2), "数学".repeat(n / 2)]) {
        expect(c.decode(c.encode(text))).toEqual({ text, incomplete: false })
      }
      const prompt = Template.prompt(c, "r1-zero", "z".repeat(MB))
      expect(prompt.length).toBeGreaterThan(0)
    })
  })

  it("long text that can be cut exactly gets the ids of one unbounded call, in every standard encoding", () => {
    const rng = (() => {
      let x = 12345
      return () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32)
    })()
    const pick = (alphabet: string, n: number) => {
      const chars = Array.from(alphabet)
      return Array.from({ length: n }, () => chars[Math.floor(rng() * chars.length)]).join("")
    }
    const texts = {
      words: Array.from({ length: 2000 }, (_, i) => `word${i % 97}, then ${"x".repeat(i % 13)} it's more.\n`).join(""),
      // Unspaced: cut only after a letter before punctuation, or beside numbers.
      cjk: Array.from({ length: 1500 }, (_, i) => `我们计算${"数学题".repeat(i % 7)}等于${i}，然后继续。`).join(""),
      base64: Buffer.from(pick("abcdefghijklmnopqrstuvwxyz0123456789", 60_000)).toString("base64"),
      mixed: pick("ab9 .,'é\u0301-/\n😀中", 80_000)
    }
    // gpt2 is r50k_base under another name (same pattern and ranks).
    for (const name of Encoding.STANDARD.filter((n) => n !== "gpt2")) {
      const raw = get_encoding(name)
      const c = Tokenizer.makeStandard(name)
      try {
        for (const [kind, text] of Object.entries(texts)) {
          expect(Segments.cuts(text).length, kind).toBeGreaterThan(5)
          expect(Array.from(c.encode(text)), `${name} ${kind}`).toEqual(Array.from(raw.encode_ordinary(text)))
        }
      } finally {
        c.free()
        raw.free()
      }
    }
  })

  it("encodeTrusted keeps a control tag whole inside a long run with no spaces", () => {
    withCl100k((c) => {
      for (let shift = 0; shift < 10; shift++) {
        const text = "q".repeat(4096 - shift) + "<think>" + "r".repeat(5000) + "</think>"
        const ids = Array.from(c.encodeTrusted(text))
        expect(ids.filter((id) => id === c.specialIds.think).length).toBe(1)
        expect(ids.filter((id) => id === c.specialIds.thinkEnd).length).toBe(1)
        expect(c.decode(Int32Array.from(ids)).text).toBe(text)
      }
    })
  })

  it("a compact vocabulary builds from a corpus holding a 1 MB word", () => {
    const vocab = Compact.build({ base: "cl100k_base", corpus: ["What is 12 + 30?", "a".repeat(MB)], size: 300 })
    const c = Tokenizer.makeCompact(vocab)
    try {
      expect(c.decode(c.encode("aaaa what")).text).toBe("aaaa what")
    } finally {
      c.free()
    }
  })
})
