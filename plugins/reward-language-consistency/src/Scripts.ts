/**
 * Words by Unicode script. A word is a run of letters (with combining marks) of one script; Han,
 * Hiragana and Katakana, written without spaces, count one word per character. Digits, punctuation
 * and symbols are not words. One linear regex pass, so 1 MB of text takes milliseconds.
 */

/** The scripts words are classified into. */
export const SCRIPTS = ["Latin", "Cyrillic", "Greek", "Arabic", "Hebrew", "Devanagari", "Hangul", "Thai", "Han", "Hiragana", "Katakana"] as const
/** A script words are classified into (`Other` for any other letters). */
export type Script = (typeof SCRIPTS)[number] | "Other"

const run = (s: string) => `(\\p{Script=${s}}[\\p{Script=${s}}\\p{M}]*)`
const char = (s: string) => `(\\p{Script=${s}})`
const WORD = new RegExp(
  [...SCRIPTS.map((s) => (s === "Han" || s === "Hiragana" || s === "Katakana" ? char(s) : run(s))), "(\\p{L}[\\p{L}\\p{M}]*)"].join("|"),
  "gu"
)

/** Each word of `text` with its script, in order. */
export function* words(text: string): Generator<readonly [Script, string]> {
  for (const m of text.matchAll(WORD)) {
    let script: Script = "Other"
    for (let g = 0; g < SCRIPTS.length; g++) {
      if (m[g + 1] !== undefined) {
        script = SCRIPTS[g]
        break
      }
    }
    yield [script, m[0]]
  }
}

/** Word counts per script in `text`. */
export const countWords = (text: string): Map<Script, number> => {
  const counts = new Map<Script, number>()
  for (const [script] of words(text)) counts.set(script, (counts.get(script) ?? 0) + 1)
  return counts
}

/** The scripts each language is written in (what counts as a word "in the language"). */
export const LANGUAGES = {
  en: ["Latin"], fr: ["Latin"], de: ["Latin"], es: ["Latin"], it: ["Latin"], pt: ["Latin"], nl: ["Latin"], vi: ["Latin"], id: ["Latin"], tr: ["Latin"], pl: ["Latin"],
  ru: ["Cyrillic"], uk: ["Cyrillic"], bg: ["Cyrillic"],
  el: ["Greek"], ar: ["Arabic"], fa: ["Arabic"], he: ["Hebrew"], hi: ["Devanagari"], th: ["Thai"], ko: ["Hangul"],
  zh: ["Han"], ja: ["Han", "Hiragana", "Katakana"]
} as const satisfies Record<string, ReadonlyArray<Script>>
/** A language code with a known script. */
export type Language = keyof typeof LANGUAGES

/**
 * The chain of thought: the first `<think>…</think>` block (or from the start when the template opened
 * it: `completionPrefix` ends with `<think>`); else the whole text. The prompt's text is never read.
 */
export const chainOfThought = (completionPrefix: string, completion: string): string => {
  const opened = completionPrefix.trimEnd().endsWith("<think>")
  const start = opened ? 0 : completion.indexOf("<think>")
  if (start < 0) return completion
  const from = opened ? 0 : start + 7
  const end = completion.indexOf("</think>", from)
  return completion.slice(from, end < 0 ? completion.length : end)
}

/** The fraction of words of `text` written in one of `scripts`; NaN when it has no words. */
export const consistency = (text: string, scripts: ReadonlyArray<Script>): number => {
  let total = 0
  let inTarget = 0
  for (const [script, n] of countWords(text)) {
    total += n
    if (scripts.includes(script)) inTarget += n
  }
  return total === 0 ? NaN : inTarget / total
}
