/**
 * Final-answer extraction and mathematical equivalence, by parsing (never `eval`).
 *
 * Extraction, from a completion: the last complete `<answer>…</answer>` block (the last `<answer>`
 * followed by a `</answer>`, up to the first one) when the completion
 * has an `<answer>` tag (and nothing outside it counts then); else the last `\boxed{…}` (nested
 * braces matched); else GSM8K's `#### …` line. Inside an answer block, a `\boxed{…}` wins.
 *
 * Equivalence: both sides are normalised (LaTeX wrappers `$…$`, `\text{}`, `\left`, spacing
 * commands, currency signs, units and `x =` prefixes dropped) and parsed as numbers: integers,
 * decimals, thousands separators, signs (`−` too), percent (`50%` matches `50` and `0.5`), fractions
 * `3/4`, `\frac{3}{4}`, `\dfrac`, `\tfrac`, `\frac34`, mixed numbers `1 1/2` and `1\frac{1}{2}`, and
 * `1e3`. Integers compare exactly; other numbers within a relative tolerance. Answers that are not
 * numbers compare as normalised text.
 *
 * Voting (`key`): equivalent answers share a key, so a majority vote (cons@k) counts `42`, `42.0` and
 * `\boxed{42}` as one answer. It lives in core because the accuracy reward and the evaluation must
 * agree on what "the same answer" is, and plugins and the engine share only core.
 */

const LIMIT = 512

/** The content of the balanced `{…}` group opening at `open`, or null when it never closes. */
export const braced = (text: string, open: number): { content: string; end: number } | null => {
  let depth = 0
  for (let i = open; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 123) depth++
    else if (c === 125 && --depth === 0) return { content: text.slice(open + 1, i), end: i + 1 }
  }
  return null
}

/** The last `\boxed{…}` / `\fbox{…}` (or `\boxed 5`) in `text`. Only the last is tried, so unclosed braces cost one scan. */
export const lastBoxed = (text: string): string | null => {
  const at = Math.max(text.lastIndexOf("\\boxed"), text.lastIndexOf("\\fbox"))
  if (at < 0) return null
  let i = at + (text.startsWith("\\boxed", at) ? 6 : 5)
  if (text[i] === "{") return braced(text, i)?.content ?? null
  if (text[i] !== " ") return null
  while (text[i] === " ") i++
  let end = i
  while (end < text.length && !/[\s$]/.test(text[end])) end++
  return end > i ? text.slice(i, end) : null
}

/** The text of the last complete `<answer>…</answer>` block (the last `<answer>` with a `</answer>` after it, up to the first such close), untrimmed; null when none. */
export const answerBlock = (completion: string): string | null => {
  const lastClose = completion.lastIndexOf("</answer>")
  if (lastClose < 0) return null
  const open = completion.lastIndexOf("<answer>", lastClose)
  if (open < 0) return null
  return completion.slice(open + 8, completion.indexOf("</answer>", open))
}

/** The model's final answer, or null when it gave none in a recognised place. */
export const extract = (completion: string): string | null => {
  if (completion.includes("<answer>")) {
    const block = answerBlock(completion)
    if (block === null) return null
    const boxed = block.includes("\\boxed") || block.includes("\\fbox") ? lastBoxed(block) : null
    const answer = (boxed ?? block).trim()
    return answer === "" ? null : answer
  }
  const boxed = lastBoxed(completion)
  if (boxed !== null) return boxed.trim() === "" ? null : boxed.trim()
  const hashes = completion.lastIndexOf("####")
  if (hashes < 0) return null
  const line = completion.slice(hashes + 4).split("\n", 1)[0].trim()
  return line === "" ? null : line
}

/** The final answer of a reference: after `####` (a GSM8K solution), a `\boxed{}`, or the whole text. */
export const referenceAnswer = (reference: string): string => {
  const hashes = reference.lastIndexOf("####")
  if (hashes >= 0) return reference.slice(hashes + 4).trim()
  return (lastBoxed(reference) ?? reference).trim()
}

/** Replaces `\cmd{x}` by `x` for the given commands (braces matched). */
const unwrap = (text: string, commands: ReadonlyArray<string>): string => {
  let out = text
  for (const cmd of commands) {
    for (let at = out.indexOf(cmd + "{"); at >= 0; at = out.indexOf(cmd + "{", at)) {
      const group = braced(out, at + cmd.length)
      if (group === null) break
      out = out.slice(0, at) + group.content + out.slice(group.end)
    }
  }
  return out
}

/** Strips LaTeX wrappers, spacing, currency, degree signs and a leading `x =`. */
export const normalize = (answer: string): string => {
  let s = answer.trim()
  s = unwrap(s, ["\\text", "\\textbf", "\\mathrm", "\\mathbf", "\\mbox", "\\boxed"])
  s = s
    .replace(/\\[dt]frac/g, "\\frac")
    .replace(/\\left|\\right|\\displaystyle/g, "")
    .replace(/\\[,;:! ]|\\quad|\\qquad|~/g, " ")
    .replace(/\\%/g, "%")
    .replace(/\\\$|\$/g, "")
    .replace(/\\\(|\\\)|\\\[|\\\]/g, "")
    .replace(/\^\s*\{?\\circ\}?|°/g, "")
    .replace(/[£€¥₹]/g, "")
    .replace(/[−–]/g, "-")
  const eq = s.lastIndexOf("=")
  if (eq >= 0) s = s.slice(eq + 1)
  s = s.trim().replace(/\.$/, "").trim()
  return s
}

/** A parsed number: `value`, whether it is an integer written exactly, and whether it had a percent sign. */
export interface Parsed {
  readonly value: number
  readonly integer: boolean
  readonly percent: boolean
}

const DECIMAL = /^(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][+-]?\d+)?$/

const decimal = (text: string): number | null => {
  if (text === "" || text === "." || !DECIMAL.test(text) || !/\d/.test(text.replace(/[eE].*$/, ""))) return null
  return Number(text.replace(/,/g, ""))
}

const fraction = (num: string, den: string): number | null => {
  const n = signed(num)
  const d = signed(den)
  return n === null || d === null || d === 0 ? null : n / d
}

const signed = (text: string): number | null => {
  const t = text.trim()
  const neg = t.startsWith("-")
  const v = decimal(neg || t.startsWith("+") ? t.slice(1).trim() : t)
  return v === null ? null : neg ? -v : v
}

/** Parses a normalised answer as a number, or null. */
export const parseNumber = (normalized: string): Parsed | null => {
  let s = normalized.replace(/\s+/g, " ").trim()
  if (s.length === 0 || s.length > LIMIT) return null
  // Units or words after a number ("18 dollars", "5 cm"): keep the number.
  const unit = /^([^a-zA-Z\\]*\d[^a-zA-Z\\]*?)\s*[a-zA-Z][a-zA-Z .]*$/.exec(s)
  if (unit !== null) s = unit[1].trim()
  if (s.startsWith("(") && s.endsWith(")")) s = s.slice(1, -1).trim()
  let percent = false
  if (s.endsWith("%")) {
    percent = true
    s = s.slice(0, -1).trim()
  }
  let sign = 1
  if (s.startsWith("-") || s.startsWith("+")) {
    sign = s.startsWith("-") ? -1 : 1
    s = s.slice(1).trim()
  }
  let value: number | null
  let integer = false
  const frac = /^(\d+)?\s*\\frac\s*(?:\{([^{}]*)\}|(\d))\s*(?:\{([^{}]*)\}|(\d))$/.exec(s)
  if (frac !== null) {
    const f = fraction(frac[2] ?? frac[3], frac[4] ?? frac[5])
    value = f === null ? null : (frac[1] === undefined ? 0 : Number(frac[1])) + f
  } else {
    const mixed = /^(\d+) (\d+)\s*\/\s*(\d+)$/.exec(s)
    const slash = /^([^/]+)\/([^/]+)$/.exec(s)
    if (mixed !== null) {
      const f = fraction(mixed[2], mixed[3])
      value = f === null ? null : Number(mixed[1]) + f
    } else if (slash !== null) {
      value = fraction(slash[1], slash[2])
    } else {
      value = decimal(s.replace(/ /g, ""))
      integer = value !== null && /^[\d,]+$/.test(s)
    }
  }
  if (value === null || !Number.isFinite(value)) return null
  return { value: sign * value, integer, percent }
}

/** Text form for non-numeric answers: no whitespace or braces, lower case. */
const textForm = (normalized: string): string => normalized.replace(/[\s{}]/g, "").toLowerCase()

const close = (a: number, b: number, tolerance: number): boolean => a === b || Math.abs(a - b) <= tolerance * Math.max(Math.abs(a), Math.abs(b))

/** Whether `predicted` and `reference` (both final answers) are the same mathematical value. */
export const equivalent = (predicted: string, reference: string, tolerance = 1e-6): boolean => {
  // A huge "answer" is not a number; exact text keeps the cost linear.
  if (predicted.length > LIMIT || reference.length > LIMIT) return predicted.trim() === reference.trim()
  const p = normalize(predicted)
  const r = normalize(reference)
  const pn = parseNumber(p)
  const rn = parseNumber(r)
  if (pn !== null && rn !== null) {
    const ps = pn.percent ? [pn.value, pn.value / 100] : [pn.value]
    const rs = rn.percent ? [rn.value, rn.value / 100] : [rn.value]
    // Two integers written out must be exactly equal; tolerance is for decimals and fractions.
    if (pn.integer && rn.integer && !pn.percent && !rn.percent) return pn.value === rn.value
    return ps.some((a) => rs.some((b) => close(a, b, tolerance)))
  }
  if (pn !== null || rn !== null) return false
  const pt = textForm(p)
  return pt !== "" && pt === textForm(r)
}

/**
 * The vote key of a final answer: answers with one key are `equivalent`. Numbers key by value (`42`,
 * `42.0`, `$42`, `42 dollars` → `n:42`), other answers by normalised text (`t:…`); null for an answer
 * that normalises to nothing. Deviations from `equivalent`, which is not transitive: a percent keys as
 * the number written (`50%` with `50`, not with `0.5`), and non-integers are equal after rounding to
 * 12 significant digits rather than within a tolerance.
 */
export const key = (answer: string): string | null => {
  if (answer.length > LIMIT) return `x:${answer.trim()}`
  const normalized = normalize(answer)
  const number = parseNumber(normalized)
  if (number !== null) return `n:${String(Number(number.value.toPrecision(12)) + 0)}`
  const text = textForm(normalized)
  return text === "" ? null : `t:${text}`
}
