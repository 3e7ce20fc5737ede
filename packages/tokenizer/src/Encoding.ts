/**
 * The standard tiktoken encodings shipped inside `@dqbd/tiktoken` (no network), and the control
 * tokens r1flow adds to every encoding.
 *
 * A standard encoding's ordinary ranks are `0 … ordinary-1` with no gaps; its own special tokens
 * (`<|endoftext|>`, …) sit above them, sometimes with gaps between (cl100k leaves 100256 and
 * 100261–100275 unused). The control tokens are appended after the highest existing id.
 */
import { createRequire } from "node:module"

/** The standard encodings a tokenizer can be built on (`gpt2` is `r50k_base` under its historical name). */
export type StandardName = "cl100k_base" | "o200k_base" | "r50k_base" | "gpt2"

/** Every standard encoding, for tests and benches that cover them all. */
export const STANDARD: ReadonlyArray<StandardName> = ["cl100k_base", "o200k_base", "r50k_base", "gpt2"]

/**
 * Number of ordinary (BPE) ranks of each standard encoding. Hard-coded so a standard tokenizer does
 * not parse megabytes of JSON to learn it; a test checks it against the package's ranks files.
 */
export const ORDINARY: Readonly<Record<StandardName, number>> = {
  cl100k_base: 100256,
  o200k_base: 199998,
  r50k_base: 50256,
  gpt2: 50256
}

/**
 * The control tokens of the R1 format and the chat turns. Every tokenizer has all of them as
 * special ids; only `encodeTrusted` ever produces them from text.
 */
export const CONTROL = {
  /** End of document; also the padding id. */
  pad: "<|endoftext|>",
  /** Start of a chat turn (followed by the role name as ordinary text). */
  imStart: "<|im_start|>",
  /** End of turn: the stop token of every completion. */
  eot: "<|im_end|>",
  think: "<think>",
  thinkEnd: "</think>",
  answer: "<answer>",
  answerEnd: "</answer>"
} as const

/** Which control token. */
export type ControlName = keyof typeof CONTROL

/** The control tokens every tokenizer has as one id: padding and end of turn (the stop token). */
export type RequiredControl = "pad" | "eot"

/**
 * The id of each control token in one tokenizer. Standard and compact tokenizers have all of them;
 * a Hugging Face tokenizer has `pad` and `eot` (mapped from its own tokens, see `HfTokenizer`) and
 * the others only where its file has that exact text as an added token (Qwen3 has `<think>`, Llama 3
 * does not): a tag without an id is ordinary text, in trusted text too.
 */
export type SpecialIds =
  & { readonly [K in RequiredControl]: number }
  & { readonly [K in Exclude<ControlName, RequiredControl>]?: number }

/** Control token texts in a fixed order (the order compact vocabularies number them in). */
export const CONTROL_TEXTS: ReadonlyArray<string> = Object.values(CONTROL)

/** A standard encoding's ranks file as the package ships it. */
export interface BaseRanks {
  readonly name: StandardName
  /** The pre-tokenization regex. */
  readonly patStr: string
  /** The encoding's own special tokens (without r1flow's control tokens). */
  readonly specialTokens: Readonly<Record<string, number>>
  /** Base64 of each ordinary token's bytes, indexed by rank. */
  readonly tokens: ReadonlyArray<string>
}

const require = createRequire(import.meta.url)
const cache = new Map<StandardName, BaseRanks>()

/**
 * Reads a standard encoding's ranks from the package. The package stores them compressed as
 * `! <first rank> b64 b64 …` (consecutive ranks after each `!` marker); this expands that.
 */
export const baseRanks = (name: StandardName): BaseRanks => {
  const hit = cache.get(name)
  if (hit !== undefined) return hit
  const raw = require(`@dqbd/tiktoken/encoders/${name}.json`) as { pat_str: string; special_tokens: Record<string, number>; bpe_ranks: string }
  const parts = raw.bpe_ranks.split(/[ \n]/)
  const tokens: Array<string> = []
  let rank = -1
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]
    if (p === "") continue
    if (p === "!") {
      rank = Number(parts[++i])
      continue
    }
    if (rank !== tokens.length) throw new Error(`ranks of ${name} are not contiguous at ${tokens.length}`)
    tokens.push(p)
    rank++
  }
  const out: BaseRanks = { name, patStr: raw.pat_str, specialTokens: raw.special_tokens, tokens }
  cache.set(name, out)
  return out
}

/** The tiktoken special-token map of a standard encoding: its own specials plus the control tokens above its highest id. */
export const standardSpecials = (name: StandardName, own: Readonly<Record<string, number>>): Record<string, number> => {
  const specials: Record<string, number> = { ...own }
  let next = Math.max(ORDINARY[name] - 1, ...Object.values(own)) + 1
  for (const text of CONTROL_TEXTS) if (!(text in specials)) specials[text] = next++
  return specials
}

/** The own special tokens of each standard encoding (as the package declares them), so no ranks file is parsed to build one. */
export const OWN_SPECIALS: Readonly<Record<StandardName, Readonly<Record<string, number>>>> = {
  cl100k_base: { "<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259, "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276 },
  o200k_base: { "<|endoftext|>": 199999, "<|endofprompt|>": 200018 },
  r50k_base: { "<|endoftext|>": 50256 },
  gpt2: { "<|endoftext|>": 50256 }
}
