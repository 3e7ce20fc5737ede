/**
 * Bounded tokenizer input: text is handed to tiktoken in segments of at most `MAX_SEGMENT` UTF-16
 * code units.
 *
 * tiktoken's BPE is quadratic in the length of a pre-tokenizer piece (a 100 KB word takes seconds),
 * and on a piece of about 1 MB its WebAssembly instance traps, after which every call on the encoder,
 * `free` included, throws "attempted to take ownership of Rust value while it was borrowed". A data
 * row can hold such a piece (a base64 blob, a minified line), so no call may see one.
 *
 * Where a segment ends matters for the ids. It ends, when it can, just before a space that sits
 * between two non-space characters: in every standard pre-tokenizer pattern (cl100k, o200k, r50k,
 * gpt2) a piece never runs from a non-space character across a following space, and none looks
 * behind, so encoding the two sides apart gives exactly the ids of encoding them together. Only text
 * with no such space for `MAX_SEGMENT` code units (one enormous word, a run of spaces or digits,
 * unspaced scripts) is cut elsewhere, between code points and never inside a given special token's
 * text; a piece straddling that cut is split in two, which is the only deviation from the unbounded
 * encoding. Decoding is unaffected: the ids of each segment decode to its own text.
 */

/** The longest text (UTF-16 code units) one tiktoken call receives when the text can be cut exactly. */
export const MAX_SEGMENT = 4096

/**
 * The length of a segment cut where no exact cut exists: inside one piece of at least `MAX_SEGMENT`
 * code units. Small, because BPE's cost grows with the square of a piece's length.
 */
export const HARD_SEGMENT = 128

const isSpace = (c: number): boolean =>
  c === 32 || (c >= 9 && c <= 13) || c === 0x85 || c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
  c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000

const LETTER = /\p{L}/u
const MARK = /\p{M}/u
const NUMBER = /\p{N}/u

/** The pre-tokenizer's character classes: letter, mark, number, space, apostrophe, other. */
type Kind = "L" | "M" | "N" | "S" | "'" | "P"

const kindOf = (c: number): Kind => {
  if (c < 128) {
    if ((c >= 65 && c <= 90) || (c >= 97 && c <= 122)) return "L"
    if (c >= 48 && c <= 57) return "N"
    return isSpace(c) ? "S" : c === 39 ? "'" : "P"
  }
  if (isSpace(c)) return "S"
  const ch = String.fromCodePoint(c)
  return LETTER.test(ch) ? "L" : MARK.test(ch) ? "M" : NUMBER.test(ch) ? "N" : "P"
}

/** The code point that ends just before `i` (a lone surrogate as itself: tiktoken reads it as U+FFFD, an "other"). */
const before = (text: string, i: number): number => {
  const c = text.charCodeAt(i - 1)
  if (c < 0xdc00 || c > 0xdfff || i < 2) return c
  const hi = text.charCodeAt(i - 2)
  return hi >= 0xd800 && hi <= 0xdbff ? text.codePointAt(i - 2)! : c
}

/**
 * Whether every standard pattern starts a piece at `i`, so encoding `text[..i]` and `text[i..]` apart
 * gives the ids of encoding them together. True before a space between two non-spaces; after a
 * letter followed by an "other" character (not a mark, which o200k counts as a letter, nor an
 * apostrophe, which o200k joins to the word: `it's`); and on either side of a number run (no
 * pattern lets a piece carry a number into a non-number, nor takes a number as a prefix). A number
 * run itself is not cut: gpt2 keeps it whole where cl100k groups it by three.
 */
const exactAt = (text: string, i: number): boolean => {
  const c = text.charCodeAt(i)
  if (c >= 0xdc00 && c <= 0xdfff) return false
  const a = kindOf(before(text, i)), b = kindOf(text.codePointAt(i)!)
  if (a === "S" || (b === "S" && c !== 32)) return false
  if (b === "S") return i + 1 < text.length && !isSpace(text.charCodeAt(i + 1))
  return (a === "L" && b === "P") || (a === "N") !== (b === "N")
}

/**
 * `at`, moved so it splits neither a surrogate pair nor an occurrence of one of `keep`: back to the
 * occurrence's start, or past its end when it starts the segment (cutting beside a special token is exact).
 */
const keepWhole = (text: string, from: number, at: number, keep: ReadonlyArray<string>): number => {
  for (const k of keep) {
    const start = text.lastIndexOf(k, at - 1)
    if (start >= from && start + k.length > at) return start > from ? start : start + k.length
  }
  const c = text.charCodeAt(at)
  if (c >= 0xdc00 && c <= 0xdfff && at - 1 > from) at--
  return at
}

/**
 * The end (exclusive) of each segment of `text`: none longer than `MAX_SEGMENT`, none splitting an
 * occurrence of a string in `keep` (the special tokens the caller lets tiktoken parse), each cut
 * exact (`exactAt`) where one exists.
 */
export const cuts = (text: string, keep: ReadonlyArray<string> = []): Array<number> => {
  const ends: Array<number> = []
  let start = 0
  // No exact cut lies in (start, searched]: a run of hard cuts scans each character once.
  let searched = 0
  while (text.length - start > MAX_SEGMENT) {
    const to = start + MAX_SEGMENT
    let found = -1
    for (let i = to; i > Math.max(start, searched); i--) {
      if (exactAt(text, i)) {
        found = i
        break
      }
    }
    const end = keepWhole(text, start, found > 0 ? found : start + HARD_SEGMENT, keep)
    // Moved back before a special token, the cut leaves the exact cut it found still to be found.
    searched = found > 0 && end !== found ? end : to
    ends.push(end)
    start = end
  }
  ends.push(text.length)
  return ends
}

/** Encodes `text` segment by segment with `encode` and concatenates the ids. */
export const encode = (text: string, encode: (segment: string) => Uint32Array, keep: ReadonlyArray<string> = []): Uint32Array => {
  if (text.length <= MAX_SEGMENT) return encode(text)
  const parts: Array<Uint32Array> = []
  let n = 0
  let start = 0
  for (const end of cuts(text, keep)) {
    const ids = encode(text.slice(start, end))
    parts.push(ids)
    n += ids.length
    start = end
  }
  const out = new Uint32Array(n)
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}
