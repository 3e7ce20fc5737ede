/**
 * Compact vocabularies: a few hundred to a few thousand ranks of a standard encoding, chosen for a
 * corpus, so the small models we train on CPU get a small embedding table.
 *
 * A compact vocabulary keeps all 256 single bytes (any text still encodes, byte by byte at worst)
 * plus the corpus' most frequent tokens, renumbered `0 … N-1` in base-rank order so BPE merge
 * priority is unchanged. The control tokens follow at `N, N+1, …`.
 *
 * Why the merge path matters: tiktoken's BPE starts from single bytes and repeatedly merges the
 * adjacent pair whose concatenation has the lowest rank. With a subset of ranks, a kept token is
 * produced only if the merges leading to it are kept too. So each token is added together with
 * every intermediate token of its base merge path (its closure); then BPE on that token's bytes
 * takes exactly the base path (at each step the base's lowest-rank pair is kept, and the subset's
 * minimum cannot be lower). A token whose own bytes do not BPE to itself in the base (rare) can
 * still be produced when a whole pre-tokenized piece equals it, as in the base. Encoding always
 * terminates with valid ids: every merge result is a kept token and every lone byte is kept.
 *
 * On disk: `ranks.tiktoken` (tiktoken's `base64 rank` lines, loaded by its custom-encoding
 * constructor) and `manifest.json` (base, sizes, special tokens, regex, SHA-256 of the ranks file,
 * and each compact id's base id, so a compact model can be initialised from a base embedding).
 */
import { get_encoding } from "@dqbd/tiktoken"
import { Utf8 } from "@r1flow/core"
import { Effect, Result, Schema } from "effect"
import { Buffer } from "node:buffer"
import { createHash } from "node:crypto"
import { mkdir, readFile, writeFile } from "node:fs/promises"
import { dirname, join } from "node:path"
import { baseRanks, CONTROL_TEXTS, type StandardName } from "./Encoding.js"
import * as Segments from "./Segments.js"

/** A compact vocabulary file is missing, unreadable, malformed, or does not match its manifest. The message starts with the file. */
export class CompactVocabError extends Schema.TaggedError<CompactVocabError>()("CompactVocabError", {
  /** The file at fault. */
  file: Schema.String,
  message: Schema.String
}) {}

/** The error for `file`, its message led by the file (callers often show only the message). */
const vocabError = (file: string, problem: string) => new CompactVocabError({ file, message: `${file}: ${problem}` })

/** The manifest's format tag. */
export const FORMAT = "r1flow-compact-vocab"
/** Name of the ranks file next to the manifest. */
export const RANKS_FILE = "ranks.tiktoken"
/** Name of the manifest file. */
export const MANIFEST_FILE = "manifest.json"

/** What `manifest.json` holds. */
export const Manifest = Schema.Struct({
  format: Schema.Literal(FORMAT),
  version: Schema.Literal(1),
  base: Schema.Literals(["cl100k_base", "o200k_base", "r50k_base", "gpt2"]),
  /** Vocabulary size: ordinary ranks plus special tokens (the embedding table's rows). */
  size: Schema.Int,
  /** Number of ordinary ranks. */
  ordinary: Schema.Int,
  specialTokens: Schema.Record(Schema.String, Schema.Int),
  patStr: Schema.String,
  ranksFile: Schema.String,
  /** SHA-256 (hex) of the ranks file's bytes. */
  sha256: Schema.String,
  /** Base-encoding id of each compact ordinary id. */
  baseIds: Schema.Array(Schema.Int),
  /** Numbers encode one digit per token (no multi-byte token holds a digit). */
  splitDigits: Schema.optionalKey(Schema.Boolean)
})
/** A decoded manifest. */
export type Manifest = typeof Manifest.Type

/** A compact vocabulary in memory: the ranks file's text and its manifest. */
export interface Vocab {
  readonly ranks: string
  readonly manifest: Manifest
}

/** The smallest size `build` accepts: all 256 bytes plus the control tokens. */
export const MIN_SIZE = 256 + CONTROL_TEXTS.length

const sha256 = (text: string): string => createHash("sha256").update(text, "utf8").digest("hex")

const rankMaps = new Map<StandardName, Map<string, number>>()

/** Base ranks keyed by the token's bytes as a latin1 string (one char per byte). */
const rankMap = (base: StandardName): Map<string, number> => {
  const hit = rankMaps.get(base)
  if (hit !== undefined) return hit
  const map = new Map<string, number>()
  baseRanks(base).tokens.forEach((b64, rank) => map.set(Buffer.from(b64, "base64").toString("latin1"), rank))
  rankMaps.set(base, map)
  return map
}

/**
 * The base tokens tiktoken's BPE creates on the way to `bytes` (including `bytes` itself), or just
 * `[rank(bytes)]` when BPE on its own bytes ends elsewhere. Mirrors tiktoken's `byte_pair_merge`:
 * merge the adjacent pair of lowest rank, leftmost on ties.
 */
const mergePath = (bytes: string, ranks: Map<string, number>): Array<number> => {
  const bounds: Array<number> = []
  for (let i = 0; i <= bytes.length; i++) bounds.push(i)
  const made: Array<number> = []
  while (bounds.length > 2) {
    let best = Infinity, at = -1
    for (let i = 0; i + 2 < bounds.length; i++) {
      const r = ranks.get(bytes.slice(bounds[i], bounds[i + 2]))
      if (r !== undefined && r < best) {
        best = r
        at = i
      }
    }
    if (at < 0) break
    made.push(best)
    bounds.splice(at + 1, 1)
  }
  return bounds.length === 2 ? made : [ranks.get(bytes)!]
}

const hasDigit = (latin1: string) => /[0-9]/.test(latin1)

/**
 * Builds a compact vocabulary of `size` ids (ordinary ranks plus the control tokens) from the
 * tokens `corpus` uses most under `base`. Fewer ids when the corpus uses fewer tokens.
 * With `splitDigits`, no multi-byte token containing a digit is kept, so every number encodes one
 * digit per token (as Llama's and DeepSeek's tokenizers do): small models then learn arithmetic on
 * digits instead of memorising a table of 1,000 three-digit chunks.
 * Throws a `RangeError` when `size` is below `MIN_SIZE`.
 */
export const build = (options: { readonly base: StandardName; readonly corpus: Iterable<string>; readonly size: number; readonly splitDigits?: boolean }): Vocab => {
  const { base, size } = options
  if (!Number.isInteger(size) || size < MIN_SIZE) throw new RangeError(`compact vocabulary size must be an integer ≥ ${MIN_SIZE} (256 bytes + ${CONTROL_TEXTS.length} control tokens), got ${size}`)
  const ranks = baseRanks(base)
  const byBytes = rankMap(base)
  const counts = new Float64Array(ranks.tokens.length)
  const encoder = get_encoding(base)
  try {
    for (const text of options.corpus) {
      const ids = Segments.encode(text, (t) => encoder.encode_ordinary(t))
      for (let i = 0; i < ids.length; i++) counts[ids[i]]++
    }
  } finally {
    encoder.free()
  }
  const kept = new Set<number>()
  for (let b = 0; b < 256; b++) kept.add(byBytes.get(String.fromCharCode(b))!)
  const budget = size - CONTROL_TEXTS.length
  const candidates: Array<number> = []
  const excluded = (r: number) => options.splitDigits === true && hasDigit(Buffer.from(ranks.tokens[r], "base64").toString("latin1"))
  for (let r = 0; r < counts.length; r++) if (counts[r] > 0 && !kept.has(r) && !excluded(r)) candidates.push(r)
  candidates.sort((a, b) => counts[b] - counts[a] || a - b)
  for (const r of candidates) {
    if (kept.size >= budget) break
    if (kept.has(r)) continue
    const need = mergePath(Buffer.from(ranks.tokens[r], "base64").toString("latin1"), byBytes).filter((t) => !kept.has(t))
    if (need.some(excluded)) continue
    if (kept.size + need.length <= budget) for (const t of need) kept.add(t)
  }
  const baseIds = [...kept].sort((a, b) => a - b)
  const lines = baseIds.map((r, i) => `${ranks.tokens[r]} ${i}\n`).join("")
  const specialTokens = Object.fromEntries(CONTROL_TEXTS.map((t, i) => [t, baseIds.length + i]))
  return {
    ranks: lines,
    manifest: {
      format: FORMAT,
      version: 1,
      base,
      size: baseIds.length + CONTROL_TEXTS.length,
      ordinary: baseIds.length,
      specialTokens,
      patStr: ranks.patStr,
      ranksFile: RANKS_FILE,
      sha256: sha256(lines),
      baseIds,
      ...(options.splitDigits === true ? { splitDigits: true } : {})
    }
  }
}

/** Writes `ranks.tiktoken` and `manifest.json` into `dir` (created if needed). */
export const save = (dir: string, vocab: Vocab): Effect.Effect<void, CompactVocabError> =>
  Effect.tryPromise({
    try: async () => {
      await mkdir(dir, { recursive: true })
      await writeFile(join(dir, vocab.manifest.ranksFile), vocab.ranks, "utf8")
      await writeFile(join(dir, MANIFEST_FILE), JSON.stringify(vocab.manifest, null, 1) + "\n", "utf8")
    },
    catch: (e) => vocabError(dir, `cannot write: ${(e as Error).message}`)
  })

/** A vocabulary file's text; bytes that are not UTF-8 are an error, never U+FFFD in a token or a hash mismatch. */
const read = (file: string): Effect.Effect<string, CompactVocabError> =>
  Effect.tryPromise({
    try: () => readFile(file),
    catch: (e) => vocabError(file, `cannot read: ${(e as Error).message}`)
  }).pipe(
    Effect.flatMap((bytes) => {
      const text = Utf8.decode(bytes)
      return Result.isSuccess(text) ? Effect.succeed(text.success) : Effect.fail(vocabError(file, text.failure))
    })
  )

/** Problems of a ranks file against its manifest, or `undefined` when it is consistent. */
const ranksProblem = (ranks: string, m: Manifest): string | undefined => {
  if (sha256(ranks) !== m.sha256) return `SHA-256 ${sha256(ranks)} does not match the manifest's ${m.sha256}`
  const lines = ranks.split("\n")
  if (lines[lines.length - 1] === "") lines.pop()
  if (lines.length !== m.ordinary) return `has ${lines.length} ranks, the manifest says ${m.ordinary}`
  const bytes = new Set<number>()
  for (let i = 0; i < lines.length; i++) {
    const [b64, rank, extra] = lines[i].split(" ")
    if (extra !== undefined || rank !== String(i) || !/^[A-Za-z0-9+/]+=*$/.test(b64)) return `line ${i + 1} is not "<base64> ${i}"`
    const raw = Buffer.from(b64, "base64")
    if (raw.length === 1) bytes.add(raw[0])
  }
  if (bytes.size !== 256) return `keeps ${bytes.size} of the 256 single bytes; text outside them could not be encoded`
  return undefined
}

const manifestProblem = (m: Manifest): string | undefined => {
  if (m.baseIds.length !== m.ordinary) return `baseIds has ${m.baseIds.length} entries, ordinary is ${m.ordinary}`
  const specials = Object.entries(m.specialTokens)
  if (m.size !== m.ordinary + specials.length) return `size ${m.size} is not ordinary (${m.ordinary}) + ${specials.length} special tokens`
  const missing = CONTROL_TEXTS.filter((t) => !(t in m.specialTokens))
  if (missing.length > 0) return `specialTokens lacks ${missing.join(", ")}`
  const ids = specials.map(([, id]) => id).sort((a, b) => a - b)
  if (ids.some((id, i) => id !== m.ordinary + i)) return `special token ids must be ${m.ordinary} … ${m.size - 1}, got ${ids.join(", ")}`
  return undefined
}

/** Loads a compact vocabulary from a directory or its `manifest.json`, checking the manifest and the ranks file against each other. */
export const load = Effect.fnUntraced(function*(path: string): Effect.fn.Return<Vocab, CompactVocabError> {
  const manifestFile = path.endsWith(".json") ? path : join(path, MANIFEST_FILE)
  const text = yield* read(manifestFile)
  const raw = yield* Effect.try({
    try: () => JSON.parse(text) as unknown,
    catch: (e) => vocabError(manifestFile, `not valid JSON: ${(e as Error).message}`)
  })
  const manifest = yield* Schema.decodeUnknownEffect(Manifest)(raw).pipe(
    Effect.mapError((e) => vocabError(manifestFile, `not a compact vocabulary manifest: ${e.message}`))
  )
  const bad = manifestProblem(manifest)
  if (bad !== undefined) return yield* vocabError(manifestFile, bad)
  const ranksFile = join(dirname(manifestFile), manifest.ranksFile)
  const ranks = yield* read(ranksFile)
  const problem = ranksProblem(ranks, manifest)
  if (problem !== undefined) return yield* vocabError(ranksFile, problem)
  return { ranks, manifest }
})
