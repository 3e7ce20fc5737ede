/**
 * Tokenizer files that cannot run, or cannot run on tiktoken: small files written by the test. A file
 * neither engine runs exactly is a one-line error naming the file and key; one whose merges tiktoken's
 * rank = id would not reproduce runs on `@huggingface/tokenizers`, with the reason, and still matches it.
 */
import { Tokenizer as HfJs } from "@huggingface/tokenizers"
import { Effect } from "effect"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { HfTokenizer } from "../src/index.js"
import { runFail } from "./helpers.js"

// GPT-2's byte table: the printable character standing for each byte.
const BYTE_CHARS = (() => {
  const out: Array<string> = []
  let n = 0
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)
    out.push(String.fromCharCode(printable ? b : 256 + n++))
  }
  return out
})()

/** A byte-level BPE tokenizer.json: the 256 bytes, then `extra` tokens in order, and `merges` as given. */
const tokenizerJson = (extra: Array<string>, merges: Array<[string, string]>, patch: (t: any) => void = () => {}) => {
  const vocab: Record<string, number> = {}
  BYTE_CHARS.forEach((c, i) => (vocab[c] = i))
  extra.forEach((t, i) => (vocab[t] = 256 + i))
  const t: any = {
    version: "1.0",
    added_tokens: [{ id: 256 + extra.length, content: "<|end|>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges }
  }
  patch(t)
  return t
}

const write = (tokenizer: unknown, config: unknown = { eos_token: "<|end|>" }): string => {
  const dir = mkdtempSync(join(tmpdir(), "r1flow-hf-"))
  if (tokenizer !== undefined) writeFileSync(join(dir, "tokenizer.json"), typeof tokenizer === "string" ? tokenizer : JSON.stringify(tokenizer))
  writeFileSync(join(dir, "tokenizer_config.json"), JSON.stringify(config))
  return dir
}

const message = async (dir: string): Promise<string> => {
  const e = await runFail(Effect.scoped(HfTokenizer.load(dir)))
  expect(e._tag).toBe("HfTokenizerError")
  expect(e.message).not.toContain("\n")
  return e.message
}

describe("errors: one line naming the file and key", () => {
  it("a missing tokenizer.json", async () => {
    const dir = write(undefined)
    expect(await message(dir)).toContain(`${join(dir, "tokenizer.json")}: (file): cannot read`)
  })

  it("malformed JSON", async () => {
    expect(await message(write("{ nope"))).toMatch(/tokenizer\.json: \(json\): not JSON/)
  })

  it("a model that is not byte-level BPE: WordPiece, byte fallback, a non-byte-level vocabulary entry, another decoder", async () => {
    expect(await message(write(tokenizerJson([], [], (t) => (t.model.type = "WordPiece"))))).toMatch(/tokenizer\.json: model\.type: "WordPiece" is not BPE/)
    expect(await message(write(tokenizerJson([], [], (t) => (t.model.byte_fallback = true))))).toMatch(/tokenizer\.json: model\.byte_fallback: true/)
    expect(await message(write(tokenizerJson(["▁hello"], [])))).toMatch(/tokenizer\.json: model\.vocab\["▁hello"\]: is not a byte-level token/)
    expect(await message(write(tokenizerJson([], [], (t) => (t.decoder = { type: "Metaspace" }))))).toMatch(/tokenizer\.json: decoder: "Metaspace" is not ByteLevel/)
  })

  it("an eos_token that is not an added token, and a chat template that does not parse", async () => {
    expect(await message(write(tokenizerJson([], []), { eos_token: "</s>" }))).toMatch(/tokenizer_config\.json: eos_token: "<\/s>" is not an added token/)
    expect(await message(write(tokenizerJson([], []), { eos_token: "<|end|>", chat_template: "{% for m in messages %}" }))).toMatch(
      /tokenizer_config\.json: chat_template: cannot parse/
    )
  })
})

describe("engine choice", () => {
  const check = async (dir: string, texts: Array<string>) => {
    const files = await Effect.runPromise(HfTokenizer.read(dir))
    const codec = HfTokenizer.make(files)
    const hf = new HfJs(files.tokenizer, files.config)
    const ids = texts.map((t) => Array.from(codec.encode(t)))
    codec.free()
    expect(ids).toEqual(texts.map((t) => hf.encode(t, { add_special_tokens: false }).ids))
    return { engine: codec.engine, reason: codec.reason, ids }
  }

  it("merges in id order, each one's own: tiktoken", async () => {
    const r = await check(write(tokenizerJson(["ab", "abc"], [["a", "b"], ["ab", "c"]])), ["abc abcd xab"])
    expect(r.engine).toBe("tiktoken")
  })

  it("a merge list whose order is not id order runs on @huggingface/tokenizers", async () => {
    const r = await check(write(tokenizerJson(["ab", "bc"], [["b", "c"], ["a", "b"]])), ["abc", "cab bca"])
    expect(r.engine).toBe("huggingface")
    expect(r.reason).toMatch(/merge order is not id order/)
  })

  it("a phantom pair (tiktoken would merge a + bc, which model.merges lacks) runs on @huggingface/tokenizers", async () => {
    const r = await check(write(tokenizerJson(["bc", "ab", "abc"], [["b", "c"], ["a", "b"], ["ab", "c"]])), ["abc", "abcabc"])
    expect(r.engine).toBe("huggingface")
    expect(r.reason).toMatch(/tiktoken would merge a bc → abc/)
    // HF's answer, which tiktoken (a + bc → abc, id 258) would not give.
    expect(r.ids[0]).toEqual([97, 256])
  })

  it("a pre-tokenizer tiktoken has no form of (WhitespaceSplit) runs on @huggingface/tokenizers", async () => {
    const pre = { type: "Sequence", pretokenizers: [{ type: "WhitespaceSplit" }, { type: "ByteLevel", add_prefix_space: false, use_regex: false }] }
    const r = await check(write(tokenizerJson(["ab"], [["a", "b"]], (t) => (t.pre_tokenizer = pre))), ["ab  ab"])
    expect(r.engine).toBe("huggingface")
    expect(r.reason).toMatch(/WhitespaceSplit has no tiktoken equivalent/)
  })
})
