/**
 * The tokenizer: one tiktoken encoder (standard or compact) with r1flow's control tokens.
 *
 * Data text (questions, user turns, anything from a file) goes through `encode`, which never parses
 * special tokens: a prompt containing the literal `<think>` or `<|endoftext|>` is encoded as the
 * bytes it is, and never throws; text of any length is encoded in bounded segments (`Segments`), so
 * one enormous word cannot trap the WebAssembly encoder. Only `encodeTrusted`, for text we wrote ourselves (SFT
 * completions), turns the control tags into control ids.
 *
 * The tiktoken encoder is WebAssembly memory: it is a resource, freed when its scope closes.
 */
import { get_encoding, Tiktoken } from "@dqbd/tiktoken"
import { Context, Effect, Layer, Schema, type Scope } from "effect"
import { Buffer, isUtf8 } from "node:buffer"
import type * as ChatTemplate from "./ChatTemplate.js"
import * as Compact from "./Compact.js"
import * as Segments from "./Segments.js"
import { CONTROL, CONTROL_TEXTS, ORDINARY, OWN_SPECIALS, standardSpecials, type SpecialIds, type StandardName } from "./Encoding.js"

/** Decoded token ids. */
export interface Decoded {
  readonly text: string
  /**
   * The ids do not decode to valid UTF-8: a multi-byte character was cut (a completion stopped
   * mid-character) or the ids hold invalid bytes or unknown ids. `text` then carries U+FFFD where
   * the bad bytes were (WHATWG decoding), so it is never exact.
   */
  readonly incomplete: boolean
}

/** A tokenizer as plain functions, usable outside Effect (benches, tests) and as the service's shape. */
export interface Codec {
  /** `cl100k_base`, … or `compact:<base>:<size>`. */
  readonly name: string
  /** Size of the id space (highest id + 1): the policy's embedding table has this many rows. */
  readonly vocabSize: number
  /** Number of ordinary (BPE) ranks; ids below it are text tokens. */
  readonly ordinary: number
  readonly specialIds: SpecialIds
  /** Ids that end a completion: `[eot]` for standard and compact tokenizers; a Hugging Face tokenizer adds its eos where that differs. */
  readonly stopIds: ReadonlyArray<number>
  /** Every special token and its id (control tokens and the base encoding's own). */
  readonly specialTokens: Readonly<Record<string, number>>
  /** Data text to ids; special-token text is encoded as ordinary bytes. The result views tiktoken's output (no copy). */
  readonly encode: (text: string) => Int32Array
  /**
   * Trusted text to ids: the control tags (`<think>`, `</think>`, `<answer>`, `</answer>`, `<|im_start|>`, `<|im_end|>`,
   * `<|endoftext|>`) become control ids; a Hugging Face tokenizer parses every added token of its file instead (what its
   * chat template writes), and a control tag that is not one of them stays text.
   */
  readonly encodeTrusted: (text: string) => Int32Array
  /** Ids to text; never throws, unknown ids decode as U+FFFD and mark the result incomplete. */
  readonly decode: (ids: Int32Array) => Decoded
  /** Ids to raw bytes, and how many ids were unknown (each replaced by the bytes of U+FFFD). */
  readonly decodeBytes: (ids: Int32Array) => { readonly bytes: Uint8Array; readonly unknown: number }
  /** Whether `id` decodes (an ordinary rank or a special token). */
  readonly isKnown: (id: number) => boolean
  /** Number of bytes `id` decodes to (a known id; cached after the first ask). */
  readonly byteLength: (id: number) => number
  /** The model's own chat template (Hugging Face tokenizers that ship one); `Template.prompt(codec, "model", …)` renders through it. */
  readonly chat?: ChatTemplate.Chat
  /** Frees the WebAssembly encoder; the codec must not be used afterwards. */
  readonly free: () => void
}

/** A tokenizer could not be built. */
export class TokenizerError extends Schema.TaggedError<TokenizerError>()("TokenizerError", {
  encoding: Schema.String,
  message: Schema.String,
  cause: Schema.optional(Schema.Defect())
}) {}

const REPLACEMENT = new Uint8Array([0xef, 0xbf, 0xbd])
const TRUSTED: Array<string> = [...CONTROL_TEXTS]
const NONE: Array<string> = []

const asInt32 = (u: Uint32Array): Int32Array => new Int32Array(u.buffer, u.byteOffset, u.length)
const asUint32 = (i: Int32Array): Uint32Array => new Uint32Array(i.buffer, i.byteOffset, i.length)

/** How a tokenizer that is not r1flow's own departs from the defaults of `fromEncoder`. */
export interface EncoderOptions {
  /** The special tokens `encodeTrusted` parses (default: the control tags). */
  readonly trusted?: ReadonlyArray<string>
  /** The control ids (default: every control tag looked up in `specialTokens`, all required). */
  readonly specialIds?: SpecialIds
  /** Ids that end a completion (default `[specialIds.eot]`). */
  readonly stopIds?: ReadonlyArray<number>
  /** Applied to all text before it is encoded (a Hugging Face normalizer such as NFC). */
  readonly normalize?: (text: string) => string
}

/** Wraps a tiktoken encoder whose ordinary ranks are `0 … ordinary-1` and whose specials are `specialTokens`. */
export const fromEncoder = (
  name: string,
  encoder: Tiktoken,
  ordinary: number,
  specialTokens: Readonly<Record<string, number>>,
  options: EncoderOptions = {}
): Codec => {
  const specialIdSet = new Set(Object.values(specialTokens))
  let vocabSize = ordinary
  for (const id of specialIdSet) vocabSize = Math.max(vocabSize, id + 1)
  const specialIds = options.specialIds ?? Object.fromEntries(
    Object.entries(CONTROL).map(([key, text]) => {
      const id = specialTokens[text]
      if (id === undefined) throw new Error(`encoding ${name} lacks the control token ${text}`)
      return [key, id]
    })
  ) as unknown as SpecialIds
  const trusted = options.trusted === undefined ? TRUSTED : [...options.trusted]
  const normalize = options.normalize ?? ((t: string) => t)
  const isKnown = (id: number): boolean => (id >= 0 && id < ordinary) || specialIdSet.has(id)

  const decodeBytes = (ids: Int32Array): { bytes: Uint8Array; unknown: number } => {
    let unknown = 0
    for (let i = 0; i < ids.length; i++) if (!isKnown(ids[i])) unknown++
    // tiktoken aborts the WebAssembly instance on an id it does not know, so those never reach it.
    if (unknown === 0) return { bytes: encoder.decode(asUint32(ids)), unknown }
    const pieces: Array<Uint8Array> = []
    let start = 0
    for (let i = 0; i <= ids.length; i++) {
      if (i < ids.length && isKnown(ids[i])) continue
      if (i > start) pieces.push(encoder.decode(asUint32(ids.subarray(start, i))))
      if (i < ids.length) pieces.push(REPLACEMENT)
      start = i + 1
    }
    return { bytes: Buffer.concat(pieces), unknown }
  }

  // Filled on demand: a batch touches a few thousand distinct ids, not the whole vocabulary.
  const lengths = new Int32Array(vocabSize).fill(-1)
  const byteLength = (id: number): number => {
    const n = lengths[id]
    return n >= 0 ? n : (lengths[id] = encoder.decode_single_token_bytes(id).length)
  }

  return {
    name,
    vocabSize,
    ordinary,
    specialIds,
    specialTokens,
    stopIds: options.stopIds ?? [specialIds.eot],
    encode: (text) => asInt32(Segments.encode(normalize(text), (t) => encoder.encode_ordinary(t))),
    encodeTrusted: (text) => asInt32(Segments.encode(normalize(text), (t) => encoder.encode(t, trusted, NONE), trusted)),
    decode: (ids) => {
      const { bytes, unknown } = decodeBytes(ids)
      const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length)
      return { text: buf.toString("utf8"), incomplete: unknown > 0 || !isUtf8(buf) }
    },
    decodeBytes,
    isKnown,
    byteLength,
    free: () => encoder.free()
  }
}

/** A standard encoding from the package, with the control tokens appended after its own specials. Throws if tiktoken fails. */
export const makeStandard = (name: StandardName): Codec => {
  const specials = standardSpecials(name, OWN_SPECIALS[name])
  const extra = Object.fromEntries(Object.entries(specials).filter(([t]) => !(t in OWN_SPECIALS[name])))
  return fromEncoder(name, get_encoding(name, extra), ORDINARY[name], specials)
}

/** A compact vocabulary through tiktoken's constructor for custom encodings. Throws if tiktoken rejects the ranks. */
export const makeCompact = (vocab: Compact.Vocab): Codec => {
  const m = vocab.manifest
  return fromEncoder(`compact:${m.base}:${m.size}`, new Tiktoken(vocab.ranks, { ...m.specialTokens }, m.patStr), m.ordinary, m.specialTokens)
}

const acquire = (encoding: string, make: () => Codec): Effect.Effect<Codec, TokenizerError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.try({
      try: make,
      catch: (cause) => new TokenizerError({ encoding, message: `cannot build the encoder: ${cause instanceof Error ? cause.message : String(cause)}`, cause })
    }),
    (codec) => Effect.sync(() => codec.free())
  )

/** The tokenizer service: the encoding every stage of a run tokenizes and decodes with. */
export class Tokenizer extends Context.Service<Tokenizer, Codec>()("@r1flow/tokenizer/Tokenizer") {
  /** Plain constructor of a standard encoding (caller frees). */
  static readonly makeStandard = makeStandard
  /** Plain constructor of a compact encoding (caller frees). */
  static readonly makeCompact = makeCompact

  /** A standard encoding, freed when the layer's scope closes. */
  static readonly layerStandard = (name: StandardName): Layer.Layer<Tokenizer, TokenizerError> =>
    Layer.effect(Tokenizer, acquire(name, () => makeStandard(name)))

  /** A compact vocabulary saved by `Compact.save`: a directory or its `manifest.json`; freed when the scope closes. */
  static readonly layerCompact = (path: string): Layer.Layer<Tokenizer, TokenizerError | Compact.CompactVocabError> =>
    Layer.effect(
      Tokenizer,
      Effect.flatMap(Compact.load(path), (vocab) => acquire(`compact (${path})`, () => makeCompact(vocab)))
    )

  /** An already-built codec (its owner frees it), e.g. a compact vocabulary built in memory. */
  static readonly layerCodec = (codec: Codec): Layer.Layer<Tokenizer> => Layer.succeed(Tokenizer, codec)
}
