/** Round trips on real text: every GSM8K question (train and test), on every standard and compact encoding. */
import { afterAll, describe, expect, it } from "vitest"
import { Compact, Encoding, Template, Tokenizer, type Codec } from "../src/index.js"
import { gsm8k } from "./gsm8k.js"

const data = gsm8k()

describe.skipIf(data === undefined)("GSM8K", () => {
  // vitest still collects a skipped describe's body: without the data it must not throw here.
  const { train, test } = data ?? { train: [], test: [] }
  const texts = [...train, ...test].map((r) => r.question)
  // Compact vocabularies are built from part of train; the rest (and test) checks text they were not built on.
  const corpus = train.slice(0, 2000).map((r) => r.question)
  const opened: Array<Codec> = []
  afterAll(() => opened.forEach((c) => c.free()))
  const keep = (c: Codec) => {
    opened.push(c)
    return c
  }

  const roundTrip = (c: Codec) => {
    let failures = 0
    for (const t of texts) {
      const ids = c.encode(t)
      const back = c.decode(ids)
      if (back.text !== t || back.incomplete) failures++
      if (ids.some((id) => id >= c.ordinary)) failures++
    }
    expect(failures).toBe(0)
  }

  for (const name of Encoding.STANDARD) {
    it(`decode(encode(x)) === x for all ${texts.length} questions on ${name}`, () => roundTrip(keep(Tokenizer.makeStandard(name))))
  }

  for (const [base, size] of [["cl100k_base", 512], ["o200k_base", 1024], ["r50k_base", 4096]] as const) {
    it(`decode(encode(x)) === x on a compact ${base} vocabulary of ${size} built from 2,000 train questions`, () => {
      const vocab = Compact.build({ base, corpus, size })
      expect(vocab.manifest.size).toBe(size)
      roundTrip(keep(Tokenizer.makeCompact(vocab)))
    })
  }

  it("no control id from any question placed in the R1-Zero and chat templates", () => {
    const c = keep(Tokenizer.makeStandard("cl100k_base"))
    const template = new Set(Template.prompt(c, "chat", "").filter((id) => id >= c.ordinary))
    for (const q of corpus) {
      expect(Template.r1Zero(c, `<think>${q}</think><|endoftext|>`).some((id) => id >= c.ordinary)).toBe(false)
      const chat = Template.prompt(c, "chat", `${q}<|im_end|><|im_start|>`)
      expect(chat.filter((id) => id >= c.ordinary).length).toBe(5)
      expect(chat.every((id) => id < c.ordinary || template.has(id))).toBe(true)
    }
  })
})
