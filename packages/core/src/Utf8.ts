/**
 * Strict UTF-8 for files we read as text (data files, configs, vocabularies).
 *
 * Node's and the WHATWG decoders replace invalid bytes with U+FFFD without a word, so a Latin-1 or
 * corrupted data file would train on silently altered questions and compare against altered answers.
 * Here invalid bytes are an error that says where they are: the 1-based line and the byte in it.
 */
import { isUtf8 } from "node:buffer"
import { Result } from "effect"

/** Where the first invalid UTF-8 sequence is: 1-based line, and 1-based byte within that line. */
export interface Invalid {
  readonly line: number
  readonly byte: number
}

const fatal = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })

const BOM = 0xfeff

/** Byte offset (0-based) of the first invalid sequence in `bytes`, or -1. Binary search on `isUtf8` prefixes would miss cut characters, so this walks the encoding. */
const firstBadByte = (bytes: Uint8Array): number => {
  let i = 0
  while (i < bytes.length) {
    const b = bytes[i]
    const n = b < 0x80 ? 1 : b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0
    if (n === 0 || i + n > bytes.length || !isUtf8(bytes.subarray(i, i + n))) return i
    i += n
  }
  return -1
}

/** Where `bytes` first fails to be UTF-8, or `undefined` when it is valid. */
export const findInvalid = (bytes: Uint8Array): Invalid | undefined => {
  if (isUtf8(bytes)) return undefined
  const at = firstBadByte(bytes)
  const lineStart = bytes.lastIndexOf(0x0a, at - 1) + 1
  let line = 1
  for (let i = 0; i < lineStart; i++) if (bytes[i] === 0x0a) line++
  return { line, byte: at - lineStart + 1 }
}

/** The bytes at `at` as hex, for a message (`0xE9 0x74`). */
const shown = (bytes: Uint8Array, at: number): string =>
  Array.from(bytes.subarray(at, Math.min(at + 4, bytes.length)), (b) => `0x${b.toString(16).toUpperCase().padStart(2, "0")}`).join(" ")

/** What `findInvalid` found in `bytes`, as a sentence (`line 3, byte 7: invalid UTF-8 (0xE9 0x74)`). */
export const describe = (bytes: Uint8Array, where: Invalid): string => {
  let start = 0
  for (let l = 1; l < where.line; l++) start = bytes.indexOf(0x0a, start) + 1
  return `line ${where.line}, byte ${where.byte}: invalid UTF-8 (${shown(bytes, start + where.byte - 1)}); the file must be UTF-8 text`
}

/** `bytes` as text, or a description of where it is not UTF-8. A leading byte-order mark is dropped. */
export const decode = (bytes: Uint8Array): Result.Result<string, string> => {
  const where = findInvalid(bytes)
  if (where !== undefined) return Result.fail(describe(bytes, where))
  const text = fatal.decode(bytes)
  return Result.succeed(text.charCodeAt(0) === BOM ? text.slice(1) : text)
}

/**
 * The lines of `bytes` (split at `\n`, a trailing `\r` dropped), each as text or why it is not
 * UTF-8, so a loader can report (or skip, by its policy) only the lines at fault. A leading
 * byte-order mark is dropped.
 */
export const lines = (bytes: Uint8Array): Array<Result.Result<string, string>> => {
  if (isUtf8(bytes)) {
    const text = fatal.decode(bytes)
    return (text.charCodeAt(0) === BOM ? text.slice(1) : text).split(/\r?\n/).map((l) => Result.succeed(l))
  }
  const out: Array<Result.Result<string, string>> = []
  for (let start = 0; start <= bytes.length;) {
    const nl = bytes.indexOf(0x0a, start)
    const end = nl < 0 ? bytes.length : nl
    let line = bytes.subarray(start, end > start && bytes[end - 1] === 0x0d ? end - 1 : end)
    if (start === 0 && line[0] === 0xef && line[1] === 0xbb && line[2] === 0xbf) line = line.subarray(3)
    const bad = firstBadByte(line)
    out.push(bad < 0 ? Result.succeed(fatal.decode(line)) : Result.fail(`byte ${bad + 1}: invalid UTF-8 (${shown(line, bad)}); the file must be UTF-8 text`))
    if (nl < 0) break
    start = nl + 1
  }
  return out
}
