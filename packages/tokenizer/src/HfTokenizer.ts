/**
 * Hugging Face tokenizers: a model directory's `tokenizer.json` + `tokenizer_config.json` as a `Codec`.
 *
 * Two engines run them. Byte-level BPE files run on tiktoken (`engine: "tiktoken"`): ranks are the
 * vocabulary with rank = id, the pattern is the file's one Split regex (or GPT-2's for a bare
 * ByteLevel pre-tokenizer), a Unicode normalizer (NFC, …) runs in JS first, and every added token is
 * a tiktoken special. tiktoken merges the adjacent pair whose concatenation has the lowest id, HF the
 * pair that comes first in `merges`; `checkMerges` proves per file that the two agree on every input
 * and, where it cannot, the file runs on `@huggingface/tokenizers` (`engine: "huggingface"`) with the
 * reason. So do files whose pre-tokenizer, normalizer or added tokens tiktoken cannot express
 * (DeepSeek-V3's three sequential Splits). A file neither can run exactly (not byte-level BPE) is a
 * one-line `HfTokenizerError` naming the file and key.
 *
 * Control tokens. `encode` never parses special-token text (either engine); `encodeTrusted` parses
 * every added token of the file. The r1flow control ids map as: `eot` is the chat template's end of
 * turn (the first added token it writes after an assistant message: `<|im_end|>`, `<|eot_id|>`,
 * `<｜end▁of▁sentence｜>`), else `eos_token`; `pad` is `pad_token`, else `eos_token`, else `eot`;
 * `imStart`, `think`, `thinkEnd`, `answer`, `answerEnd` are the added tokens of that exact text where
 * the file has them, else absent (the tag is then ordinary text); `stopIds` is `eot` and `eos_token`.
 */
import { Tiktoken } from "@dqbd/tiktoken"
import { Tokenizer as HfJs } from "@huggingface/tokenizers"
import { Effect, Layer, Schema, type Scope } from "effect"
import { Buffer, isUtf8 } from "node:buffer"
import { readFile } from "node:fs/promises"
import { basename, join } from "node:path"
import * as ChatTemplate from "./ChatTemplate.js"
import { CONTROL, type ControlName, type SpecialIds } from "./Encoding.js"
import { type Codec, fromEncoder, Tokenizer } from "./Tokenizer.js"

/** A tokenizer file is missing, malformed or cannot be run exactly. The message is one line: `<file>: <key>: <problem>`. */
export class HfTokenizerError extends Schema.TaggedError<HfTokenizerError>()("HfTokenizerError", {
  file: Schema.String,
  key: Schema.String,
  message: Schema.String
}) {}

const fail = (file: string, key: string, problem: string): HfTokenizerError =>
  new HfTokenizerError({ file, key, message: `${file}: ${key}: ${problem}`.replace(/\s*\n\s*/g, " ") })

/** Which engine runs a tokenizer. */
export type Engine = "tiktoken" | "huggingface"

/** A loaded Hugging Face tokenizer: a `Codec` plus what runs it and its chat template. */
export interface HfCodec extends Codec {
  readonly engine: Engine
  /** Why this engine: what made tiktoken exact, or what it cannot express. */
  readonly reason: string
}

/** The two files as parsed JSON, and where they came from. */
export interface Files {
  readonly dir: string
  readonly tokenizerFile: string
  readonly configFile: string
  readonly tokenizer: any
  readonly config: any
}

const readJson = (file: string): Effect.Effect<any, HfTokenizerError> =>
  Effect.flatMap(
    Effect.tryPromise({ try: () => readFile(file, "utf8"), catch: (e) => fail(file, "(file)", `cannot read: ${(e as Error).message}`) }),
    (text) => Effect.try({ try: () => JSON.parse(text) as unknown, catch: (e) => fail(file, "(json)", `not JSON: ${(e as Error).message}`) })
  )

/** Reads `tokenizer.json` and `tokenizer_config.json` from `dir`. */
export const read = (dir: string): Effect.Effect<Files, HfTokenizerError> =>
  Effect.gen(function*() {
    const tokenizerFile = join(dir, "tokenizer.json"), configFile = join(dir, "tokenizer_config.json")
    const tokenizer = yield* readJson(tokenizerFile)
    const config = yield* readJson(configFile)
    return { dir, tokenizerFile, configFile, tokenizer, config }
  })

// GPT-2's byte ↔ printable-character table, which byte-level vocabularies are written in.
const BYTE_OF = (() => {
  const out = new Map<number, number>()
  let n = 0
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)
    out.set(printable ? b : 256 + n++, b)
  }
  return out
})()

/** The bytes a byte-level vocabulary entry stands for, or `undefined` when it is not byte-level. */
export const byteLevelBytes = (token: string): Uint8Array | undefined => {
  const out = new Uint8Array(token.length)
  for (let i = 0; i < token.length; i++) {
    const b = BYTE_OF.get(token.charCodeAt(i))
    if (b === undefined) return undefined
    out[i] = b
  }
  return out
}

/** GPT-2's pre-tokenizer, which a bare `ByteLevel` pre-tokenizer with `use_regex` applies. */
export const GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

const escapeRegex = (s: string): string => s.replace(/[.*+?^${}()|[\]\\-]/g, "\\$&")

interface AddedToken {
  readonly id: number
  readonly content: string
  readonly special: boolean
  readonly lstrip?: boolean
  readonly rstrip?: boolean
  readonly single_word?: boolean
  readonly normalized?: boolean
}

/** What the files say, checked: the vocabulary's bytes, the added tokens and the special-token texts of the config. */
interface Parsed {
  readonly vocab: Map<string, number>
  readonly added: ReadonlyArray<AddedToken>
  readonly specialTokens: Record<string, number>
  readonly merges: ReadonlyArray<readonly [string, string]>
}

const tokenText = (v: unknown): string | undefined =>
  typeof v === "string" ? v : v !== null && typeof v === "object" && typeof (v as any).content === "string" ? (v as any).content : undefined

const parse = (f: Files): Parsed => {
  const t = f.tokenizer, F = f.tokenizerFile
  if (t === null || typeof t !== "object" || t.model === null || typeof t.model !== "object") throw fail(F, "model", "missing")
  const m = t.model
  if (m.type !== "BPE") throw fail(F, "model.type", `${JSON.stringify(m.type)} is not BPE; r1flow runs byte-level BPE tokenizers only`)
  if (m.dropout !== undefined && m.dropout !== null && m.dropout !== 0) throw fail(F, "model.dropout", `${m.dropout}: BPE dropout is not deterministic`)
  if (m.byte_fallback === true) throw fail(F, "model.byte_fallback", "true: a byte-fallback (SentencePiece-style) model is not byte-level BPE")
  for (const key of ["continuing_subword_prefix", "end_of_word_suffix"] as const) {
    if (typeof m[key] === "string" && m[key] !== "") throw fail(F, `model.${key}`, `${JSON.stringify(m[key])} is not supported (byte-level BPE has none)`)
  }
  const decoder = t.decoder
  const decoders: Array<any> = decoder?.type === "Sequence" ? decoder.decoders : [decoder]
  if (decoder === null || decoder === undefined || decoders.length !== 1 || decoders[0]?.type !== "ByteLevel") {
    throw fail(F, "decoder", `${JSON.stringify(decoder?.type ?? null)} is not ByteLevel; r1flow runs byte-level BPE tokenizers only`)
  }
  if (m.vocab === null || typeof m.vocab !== "object") throw fail(F, "model.vocab", "missing")
  if (!Array.isArray(m.merges)) throw fail(F, "model.merges", "missing")
  if (!Array.isArray(t.added_tokens)) throw fail(F, "added_tokens", "missing")
  const added: Array<AddedToken> = t.added_tokens
  const addedText = new Set(added.map((a) => a.content))
  const vocab = new Map<string, number>()
  for (const [token, id] of Object.entries(m.vocab as Record<string, number>)) {
    if (!Number.isInteger(id) || id < 0) throw fail(F, `model.vocab[${JSON.stringify(token)}]`, `id ${id} is not a non-negative integer`)
    // An added token may also sit in the vocabulary (DeepSeek-V3's first three): it is a special, not a rank.
    if (addedText.has(token)) continue
    if (byteLevelBytes(token) === undefined) throw fail(F, `model.vocab[${JSON.stringify(token)}]`, "is not a byte-level token (a character outside GPT-2's byte table)")
    vocab.set(token, id)
  }
  const specialTokens: Record<string, number> = {}
  const ids = new Set(vocab.values())
  for (const a of added) {
    if (typeof a.content !== "string" || !Number.isInteger(a.id)) throw fail(F, "added_tokens", `malformed entry ${JSON.stringify(a)}`)
    if (ids.has(a.id)) throw fail(F, `added_tokens[${JSON.stringify(a.content)}]`, `id ${a.id} is also a vocabulary token`)
    specialTokens[a.content] = a.id
  }
  const merges = (m.merges as Array<unknown>).map((x, i) => {
    const pair = Array.isArray(x) ? x : typeof x === "string" ? x.split(" ") : []
    if (pair.length !== 2 || typeof pair[0] !== "string" || typeof pair[1] !== "string") throw fail(F, `model.merges[${i}]`, `malformed ${JSON.stringify(x)}`)
    return [pair[0], pair[1]] as const
  })
  return { vocab, added, specialTokens, merges }
}

/** The isolated tiktoken BPE run on `word` (characters of a byte-level token): every state, each merge reported to `visit`. */
const tiktokenRun = (vocab: Map<string, number>, word: Array<string>, visit: (w: ReadonlyArray<string>, at: number) => boolean): Array<string> => {
  const w = [...word]
  while (w.length > 1) {
    let best = Infinity, at = -1
    for (let i = 0; i + 1 < w.length; i++) {
      const r = vocab.get(w[i] + w[i + 1])
      if (r !== undefined && r < best) {
        best = r
        at = i
      }
    }
    if (at < 0 || !visit(w, at)) break
    w.splice(at, 2, w[at] + w[at + 1])
  }
  return w
}

/**
 * Whether tiktoken with rank = id gives HF's BPE on every input, or why not. HF merges the listed
 * pair of lowest merge index; tiktoken the adjacent pair whose concatenation has the lowest id. They
 * agree when (1) merge results' ids never decrease along `merges`; (2) tiktoken never merges a pair
 * that is not a listed merge ("phantom" pair: HF would not merge it). A phantom merge inside any
 * piece happens, up to the piece's surroundings, exactly as in tiktoken's run on that token's own
 * bytes (no merge crosses the boundary of a span that becomes two adjacent tokens), so running
 * tiktoken on every token's bytes finds them all; (3) without `ignore_merges`, HF's BPE of a token's
 * bytes is that token, as tiktoken's whole-piece lookup assumes; (4) where several merges make one
 * token (Llama 3), tiktoken takes the leftmost of two overlapping ones and HF the earlier one: no
 * such overlap may be reachable (checked the same way, on the three tokens' bytes).
 */
export const checkMerges = (parsed: Parsed, ignoreMerges: boolean): { readonly exact: boolean; readonly reason: string } => {
  const { vocab, merges } = parsed
  const rank = new Map<string, number>()
  const byResult = new Map<string, Array<readonly [string, string, number]>>()
  let last = -1
  for (let i = 0; i < merges.length; i++) {
    const [a, b] = merges[i]
    const id = vocab.get(a + b)
    if (id === undefined) return { exact: false, reason: `merge ${i} (${a} ${b}) makes no vocabulary token` }
    if (id < last) return { exact: false, reason: `merge ${i} (${a} ${b}) makes id ${id} after a merge made id ${last}: merge order is not id order` }
    last = id
    const key = `${a} ${b}`
    if (!rank.has(key)) rank.set(key, i)
    const list = byResult.get(a + b)
    if (list === undefined) byResult.set(a + b, [[a, b, i]])
    else list.push([a, b, i])
  }
  let phantom: string | undefined, unreachable: string | undefined
  for (const token of vocab.keys()) {
    if (token.length < 2) continue
    const out = tiktokenRun(vocab, Array.from(token), (w, at) => {
      if (rank.has(`${w[at]} ${w[at + 1]}`)) return true
      phantom = `${w[at]} ${w[at + 1]} → ${token}`
      return false
    })
    if (phantom !== undefined) return { exact: false, reason: `tiktoken would merge ${phantom}, which is not in model.merges` }
    if (!ignoreMerges && out.length !== 1 && unreachable === undefined) unreachable = token
  }
  if (unreachable !== undefined) return { exact: false, reason: `token ${unreachable} is not reached by its merges and model.ignore_merges is off` }
  for (const [t, list] of byResult) {
    if (list.length < 2) continue
    for (const [x, m1, i1] of list) {
      for (const [m2, y, i2] of list) {
        if (m1 !== m2 || i1 <= i2) continue
        let reached = false
        tiktokenRun(vocab, Array.from(x + m1 + y), (w) => {
          if (w.length === 3 && w[0] === x && w[1] === m1 && w[2] === y) reached = true
          return !reached
        })
        if (reached) return { exact: false, reason: `the merges ${x} ${m1} and ${m2} ${y} both make ${t} and can overlap; tiktoken and HF order them differently` }
      }
    }
  }
  return { exact: true, reason: `rank = id reproduces model.merges (checked for all ${vocab.size} tokens)` }
}

const NORMALIZERS: Record<string, "NFC" | "NFD" | "NFKC" | "NFKD"> = { NFC: "NFC", NFD: "NFD", NFKC: "NFKC", NFKD: "NFKD" }

/** The normalizer as a JS function, or `undefined` when it is not a Unicode normal form (or a sequence of them). */
const jsNormalizer = (n: any): ((s: string) => string) | undefined => {
  if (n === null || n === undefined) return (s) => s
  if (n.type === "Sequence" && Array.isArray(n.normalizers)) {
    const fs = n.normalizers.map(jsNormalizer)
    if (fs.some((f: unknown) => f === undefined)) return undefined
    return (s) => fs.reduce((t: string, f: (s: string) => string) => f(t), s)
  }
  const form = NORMALIZERS[n.type]
  return form === undefined ? undefined : (s) => s.normalize(form)
}

/** The tiktoken pattern of the pre-tokenizer, or why there is none. */
const tiktokenPattern = (pre: any): { pattern?: string; reason?: string } => {
  const steps: Array<any> = pre?.type === "Sequence" ? pre.pretokenizers : pre === null || pre === undefined ? [] : [pre]
  const splits = steps.filter((s) => s?.type === "Split"), levels = steps.filter((s) => s?.type === "ByteLevel")
  const other = steps.find((s) => s?.type !== "Split" && s?.type !== "ByteLevel")
  if (other !== undefined) return { reason: `pre_tokenizer ${other?.type} has no tiktoken equivalent` }
  if (levels.length !== 1 || steps[steps.length - 1] !== levels[0]) return { reason: "pre_tokenizer does not end with one ByteLevel step" }
  const level = levels[0]
  if (level.add_prefix_space === true) return { reason: "pre_tokenizer ByteLevel.add_prefix_space is on" }
  if (splits.length === 0) return level.use_regex === false ? { reason: "pre_tokenizer splits nothing" } : { pattern: GPT2_PATTERN }
  if (level.use_regex !== false) return { reason: "pre_tokenizer splits twice (Split, then ByteLevel.use_regex)" }
  if (splits.length > 1) return { reason: `pre_tokenizer has ${splits.length} sequential Split steps (one tiktoken pattern cannot chain them exactly)` }
  const s = splits[0]
  if (s.behavior !== "Isolated" || s.invert === true) return { reason: `pre_tokenizer Split behavior ${s.behavior}${s.invert === true ? " inverted" : ""} is not tiktoken's (Isolated)` }
  const p = s.pattern
  if (typeof p?.Regex === "string") return { pattern: p.Regex }
  if (typeof p?.String === "string") return { pattern: escapeRegex(p.String) }
  return { reason: "pre_tokenizer Split pattern is neither Regex nor String" }
}

const RANKS_B64 = (vocab: Map<string, number>): string => {
  const lines: Array<string> = []
  for (const [token, id] of vocab) lines.push(`${Buffer.from(byteLevelBytes(token)!).toString("base64")} ${id}`)
  return lines.join("\n")
}

/** The control ids, stop ids and chat template the files imply (see the module comment). */
const controls = (f: Files, p: Parsed): { specialIds: SpecialIds; stopIds: Array<number>; chat: ChatTemplate.Chat | undefined } => {
  const C = f.configFile
  const idOf = (key: string): number | undefined => {
    const text = tokenText(f.config?.[key])
    if (text === undefined) return undefined
    const id = p.specialTokens[text]
    if (id === undefined) throw fail(C, key, `${JSON.stringify(text)} is not an added token of ${f.tokenizerFile}`)
    return id
  }
  const eos = idOf("eos_token")
  const pad = idOf("pad_token")
  let chat: ChatTemplate.Chat | undefined
  try {
    chat = ChatTemplate.fromConfig(C, f.config, p.specialTokens)
  } catch (e) {
    throw e instanceof ChatTemplate.ChatTemplateError ? new HfTokenizerError({ file: e.file, key: e.key, message: e.message }) : e
  }
  const turnEnd = chat?.endOfTurn === undefined ? undefined : p.specialTokens[chat.endOfTurn]
  const eot = turnEnd ?? eos
  if (eot === undefined) throw fail(C, "eos_token", "missing, and the chat template gives no end-of-turn token: a completion could never stop")
  const optional = (name: ControlName): number | undefined => p.specialTokens[CONTROL[name]]
  const specialIds: SpecialIds = {
    pad: pad ?? eos ?? eot,
    eot,
    imStart: optional("imStart"),
    think: optional("think"),
    thinkEnd: optional("thinkEnd"),
    answer: optional("answer"),
    answerEnd: optional("answerEnd")
  }
  return { specialIds, stopIds: [...new Set(eos === undefined ? [eot] : [eot, eos])], chat }
}

/** Which engine can run the files exactly, with the reason; the tiktoken inputs when it is tiktoken. */
export const plan = (f: Files): { engine: Engine; reason: string; pattern?: string; normalize?: (s: string) => string; parsed: Parsed } => {
  const parsed = parse(f)
  const normalize = jsNormalizer(f.tokenizer.normalizer)
  if (normalize === undefined) return { engine: "huggingface", reason: `normalizer ${f.tokenizer.normalizer?.type} has no JS equivalent`, parsed }
  const { pattern, reason } = tiktokenPattern(f.tokenizer.pre_tokenizer)
  if (pattern === undefined) return { engine: "huggingface", reason: reason!, parsed }
  const flagged = parsed.added.find((a) => a.lstrip === true || a.rstrip === true || a.single_word === true)
  if (flagged !== undefined) return { engine: "huggingface", reason: `added token ${flagged.content} strips or matches whole words (tiktoken specials cannot)`, parsed }
  const texts = Object.keys(parsed.specialTokens)
  const prefix = texts.find((a) => texts.some((b) => a !== b && b.startsWith(a)))
  if (prefix !== undefined) return { engine: "huggingface", reason: `added token ${prefix} is a prefix of another (tiktoken's match order is unspecified)`, parsed }
  const merges = checkMerges(parsed, f.tokenizer.model.ignore_merges === true)
  if (!merges.exact) return { engine: "huggingface", reason: merges.reason, parsed }
  return { engine: "tiktoken", reason: merges.reason, pattern, normalize, parsed }
}

/** Flat bytes of every id (vocabulary and added tokens), for the engine that has no byte decoder of its own. */
const byteTable = (p: Parsed, size: number): { offsets: Int32Array; bytes: Uint8Array; known: Uint8Array } => {
  const parts: Array<Uint8Array | undefined> = new Array(size)
  for (const [token, id] of p.vocab) parts[id] = byteLevelBytes(token)
  for (const [text, id] of Object.entries(p.specialTokens)) parts[id] = Buffer.from(text, "utf8")
  const offsets = new Int32Array(size + 1)
  const known = new Uint8Array(size)
  let n = 0
  for (const b of parts) n += b?.length ?? 0
  const bytes = new Uint8Array(n)
  let at = 0
  for (let id = 0; id < size; id++) {
    const b = parts[id]
    if (b !== undefined) {
      bytes.set(b, at)
      at += b.length
      known[id] = 1
    }
    offsets[id + 1] = at
  }
  return { offsets, bytes, known }
}

const REPLACEMENT = new Uint8Array([0xef, 0xbf, 0xbd])

/** The `@huggingface/tokenizers` engine as a Codec: data text goes through normalizer, pre-tokenizer and model only (no added-token split). */
const huggingfaceCodec = (f: Files, p: Parsed, c: ReturnType<typeof controls>): Codec => {
  const hf = new HfJs(f.tokenizer, f.config)
  const toIds = hf.model!.tokens_to_ids
  let size = 0
  for (const id of p.vocab.values()) size = Math.max(size, id + 1)
  for (const id of Object.values(p.specialTokens)) size = Math.max(size, id + 1)
  const table = byteTable(p, size)
  const known = table.known
  const isKnown = (id: number): boolean => id >= 0 && id < size && known[id] === 1
  const ids = (tokens: ReadonlyArray<string>): Int32Array => {
    const out = new Int32Array(tokens.length)
    for (let i = 0; i < tokens.length; i++) out[i] = toIds.get(tokens[i])!
    return out
  }
  const decodeBytes = (list: Int32Array): { bytes: Uint8Array; unknown: number } => {
    let n = 0, unknown = 0
    for (const id of list) {
      if (isKnown(id)) n += table.offsets[id + 1] - table.offsets[id]
      else {
        unknown++
        n += 3
      }
    }
    const out = new Uint8Array(n)
    let at = 0
    for (const id of list) {
      const piece = isKnown(id) ? table.bytes.subarray(table.offsets[id], table.offsets[id + 1]) : REPLACEMENT
      out.set(piece, at)
      at += piece.length
    }
    return { bytes: out, unknown }
  }
  let ordinary = 0
  for (const id of p.vocab.values()) ordinary = Math.max(ordinary, id + 1)
  return {
    name: `hf:${basename(f.dir)}`,
    vocabSize: size,
    ordinary,
    specialIds: c.specialIds,
    specialTokens: p.specialTokens,
    stopIds: c.stopIds,
    encode: (text) => {
      const normalized = hf.normalizer === null ? text : hf.normalizer(text)
      const pieces = hf.pre_tokenizer === null ? [normalized] : hf.pre_tokenizer(normalized)
      return ids(hf.model!(pieces))
    },
    encodeTrusted: (text) => Int32Array.from(hf.encode(text, { add_special_tokens: false }).ids),
    decode: (list) => {
      const { bytes, unknown } = decodeBytes(list)
      const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length)
      return { text: buf.toString("utf8"), incomplete: unknown > 0 || !isUtf8(buf) }
    },
    decodeBytes,
    isKnown,
    byteLength: (id) => table.offsets[id + 1] - table.offsets[id],
    free: () => {}
  }
}

/** Options of `make`. */
export interface MakeOptions {
  /** Run on `@huggingface/tokenizers` even where tiktoken is exact (the bench compares the two engines on one file). */
  readonly engine?: "huggingface"
}

/** Builds the codec of parsed files on the engine `plan` picks. Throws `HfTokenizerError` (one line, file and key). */
export const make = (f: Files, options: MakeOptions = {}): HfCodec => {
  const planned = plan(f)
  const c = controls(f, planned.parsed)
  if (options.engine === "huggingface") return { ...huggingfaceCodec(f, planned.parsed, c), engine: "huggingface", reason: "asked for", chat: c.chat }
  if (planned.engine === "tiktoken") {
    let ordinary = 0
    for (const id of planned.parsed.vocab.values()) ordinary = Math.max(ordinary, id + 1)
    let encoder: Tiktoken
    try {
      encoder = new Tiktoken(RANKS_B64(planned.parsed.vocab), planned.parsed.specialTokens, planned.pattern!)
    } catch (e) {
      // The pattern is the likeliest culprit (Oniguruma syntax fancy-regex rejects): the other engine runs it.
      const reason = `tiktoken rejects the pre_tokenizer pattern: ${e instanceof Error ? e.message : String(e)}`
      return { ...huggingfaceCodec(f, planned.parsed, c), engine: "huggingface", reason, chat: c.chat }
    }
    const codec = fromEncoder(`hf:${basename(f.dir)}`, encoder, ordinary, planned.parsed.specialTokens, {
      trusted: Object.keys(planned.parsed.specialTokens),
      specialIds: c.specialIds,
      stopIds: c.stopIds,
      normalize: planned.normalize
    })
    return { ...codec, engine: "tiktoken", reason: planned.reason, chat: c.chat }
  }
  return { ...huggingfaceCodec(f, planned.parsed, c), engine: "huggingface", reason: planned.reason, chat: c.chat }
}

/** Loads a model directory's tokenizer as a scoped resource (the tiktoken encoder is freed when the scope closes). */
export const load = (dir: string): Effect.Effect<HfCodec, HfTokenizerError, Scope.Scope> =>
  Effect.flatMap(read(dir), (files) =>
    Effect.acquireRelease(
      Effect.try({
        try: () => make(files),
        catch: (e) => e instanceof HfTokenizerError ? e : fail(files.tokenizerFile, "(tokenizer)", e instanceof Error ? e.message : String(e))
      }),
      (codec) => Effect.sync(() => codec.free())
    ))

/** The `Tokenizer` service from a model directory's tokenizer files, freed when the layer's scope closes. */
export const layer = (dir: string): Layer.Layer<Tokenizer, HfTokenizerError> => Layer.effect(Tokenizer, load(dir))
