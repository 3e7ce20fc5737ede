/**
 * R1's rejection-sampling filters (DeepSeek-R1 §2.3.3), as pure functions over one prompt's samples,
 * and the counts they leave. The filters run in this fixed order, and a sample is counted under the
 * first one that rejects it, so every sample drawn is either kept or counted exactly once:
 *
 *   unfinished      the completion was cut (finish reason not `stop`), when `requireStop`
 *   incorrect       the row has a reference answer and a rule reward scored it below its threshold
 *                   (a NaN score is "does not apply", as reward routing writes it; at least one rule
 *                   reward must have scored the row), or the row has no reference answer and no judge
 *   judge           the row has no reference answer and the judge scored it below `judgeThreshold` (or NaN)
 *   mixed_language  the language-consistency score is below its threshold (NaN, no words: not mixed)
 *   long_paragraph  a paragraph is longer than `maxParagraphChars` code points; a paragraph is one
 *                   line (the text between newlines): a chain written in short lines reads well, one
 *                   that runs hundreds of characters without a break does not
 *   code_block      a fenced (```) or indented (4 spaces or a tab after a blank line, or first) code
 *                   block, in a row whose task is not code (a code row carries `metadata.tests`)
 *   duplicate       the same text as a completion already kept for this prompt, after `normalise`
 *   per_prompt_cap  the prompt already has `maxPerPrompt` kept completions
 *
 * Shares: rejected_rate/f = rejected/f / sampled and accept_rate = kept / sampled, so
 * Σ_f rejected_rate/f + accept_rate = 1.
 */

/** The filters, in the order they are applied. */
export const FILTERS = ["unfinished", "incorrect", "judge", "mixed_language", "long_paragraph", "code_block", "duplicate", "per_prompt_cap"] as const
/** One filter's name. */
export type Filter = typeof FILTERS[number]

/** A reward's score of a sample and the threshold it must reach. */
export interface Scored {
  readonly score: number
  readonly threshold: number
}

/** One sample as the filters see it. */
export interface Sample {
  readonly completion: string
  readonly finishReason: string
  /** The row's reference answer is non-empty (a rule reward can judge it). */
  readonly hasAnswer: boolean
  /** The row is a code task (`metadata.tests` present). */
  readonly isCode: boolean
  /** The rule rewards (every reward but the judge and the language one). */
  readonly rule: ReadonlyArray<Scored>
  /** The judge's score, when a judge is configured. */
  readonly judge: Scored | undefined
  /** The language-consistency score, when a language reward is configured. */
  readonly language: Scored | undefined
}

/** The filters' settings. */
export interface Options {
  readonly requireStop: boolean
  readonly maxParagraphChars: number
  readonly maxPerPrompt: number
}

/** Kept and rejected counts over the samples drawn. */
export interface Counts {
  readonly sampled: number
  readonly kept: number
  readonly rejected: Readonly<Record<Filter, number>>
}

/** Counts of nothing. */
export const emptyCounts = (): Counts => ({ sampled: 0, kept: 0, rejected: Object.fromEntries(FILTERS.map((f) => [f, 0])) as Record<Filter, number> })

/** Whitespace runs collapsed to one space, trimmed, lower-cased: the text two duplicates share. */
export const normalise = (text: string): string => text.replace(/\s+/g, " ").trim().toLowerCase()

/** Code points in the longest line of `text`. */
export const longestParagraph = (text: string): number => {
  let longest = 0
  for (const line of text.split("\n")) {
    let n = 0
    for (const _ of line) n++
    if (n > longest) longest = n
  }
  return longest
}

/** A fenced (```) or indented code block: an indented line opens one only after a blank line (or first), as in Markdown. */
export const hasCodeBlock = (text: string): boolean => {
  if (text.includes("```")) return true
  const lines = text.split("\n")
  return lines.some((line, i) => /^( {4}|\t)\S/.test(line) && (i === 0 || lines[i - 1].trim() === ""))
}

const passes = (s: Scored) => s.score >= s.threshold

/** Correct by the rule rewards: every one that scored the row reaches its threshold, and one did. Rows without an answer go to the judge. */
export const incorrect = (sample: Sample): boolean => {
  if (!sample.hasAnswer) return sample.judge === undefined
  const scored = sample.rule.filter((r) => !Number.isNaN(r.score))
  return scored.length === 0 || !scored.every(passes)
}

/** Indices (into `sample.rule`) of the rule rewards that scored the sample below their threshold: which rules an `incorrect` failed. */
export const failedRules = (sample: Sample): Array<number> =>
  sample.rule.flatMap((r, k) => (!Number.isNaN(r.score) && !passes(r) ? [k] : []))

/** The judge rejects a row without a reference answer when it scores it below its threshold or not at all (NaN). */
export const judgeRejects = (sample: Sample): boolean => !sample.hasAnswer && sample.judge !== undefined && !passes(sample.judge)

/** Mixed language: a language score below its threshold (NaN means the chain had no words, so nothing mixed). */
export const mixedLanguage = (sample: Sample): boolean => sample.language !== undefined && !Number.isNaN(sample.language.score) && !passes(sample.language)

/** The first filter before deduplication that rejects `sample`, or undefined. */
export const firstContentRejection = (sample: Sample, options: Options): Filter | undefined =>
  options.requireStop && sample.finishReason !== "stop" ? "unfinished"
    : incorrect(sample) ? "incorrect"
    : judgeRejects(sample) ? "judge"
    : mixedLanguage(sample) ? "mixed_language"
    : longestParagraph(sample.completion) > options.maxParagraphChars ? "long_paragraph"
    : !sample.isCode && hasCodeBlock(sample.completion) ? "code_block"
    : undefined

/** One prompt's samples through every filter: the indices kept (in order) and the filter each other one met first. */
export const selectGroup = (samples: ReadonlyArray<Sample>, options: Options): { kept: Array<number>; rejectedBy: Array<Filter | undefined> } => {
  const kept: Array<number> = []
  const seen = new Set<string>()
  const rejectedBy = samples.map((sample, i): Filter | undefined => {
    const content = firstContentRejection(sample, options)
    if (content !== undefined) return content
    const key = normalise(sample.completion)
    if (seen.has(key)) return "duplicate"
    if (kept.length >= options.maxPerPrompt) return "per_prompt_cap"
    seen.add(key)
    kept.push(i)
    return undefined
  })
  return { kept, rejectedBy }
}

/** `counts` plus one group's outcome. */
export const addGroup = (counts: Counts, group: { kept: ReadonlyArray<number>; rejectedBy: ReadonlyArray<Filter | undefined> }): Counts => {
  const rejected = { ...counts.rejected }
  for (const f of group.rejectedBy) if (f !== undefined) rejected[f]++
  return { sampled: counts.sampled + group.rejectedBy.length, kept: counts.kept + group.kept.length, rejected }
}

/** The stage's metrics: kept, sampled, accept_rate, and per filter its rejected count and share of the samples drawn. */
export const metrics = (label: string, counts: Counts, direct: number): Record<string, number> => {
  const out: Record<string, number> = { [`${label}/kept`]: counts.kept, [`${label}/sampled`]: counts.sampled, [`${label}/accept_rate`]: counts.kept / counts.sampled }
  for (const f of FILTERS) {
    out[`${label}/rejected/${f}`] = counts.rejected[f]
    out[`${label}/rejected_rate/${f}`] = counts.rejected[f] / counts.sampled
  }
  out[`${label}/direct`] = direct
  return out
}

/** The log line's summary: kept of sampled, then each filter that rejected anything. */
export const summary = (counts: Counts, direct: number): string => {
  const pct = (n: number) => `${(100 * n / counts.sampled).toFixed(1)} %`
  const rejected = FILTERS.filter((f) => counts.rejected[f] > 0).map((f) => `${f} ${counts.rejected[f]} (${pct(counts.rejected[f])})`)
  return `kept ${counts.kept} of ${counts.sampled} sampled completions (${pct(counts.kept)}); rejected: ${rejected.length > 0 ? rejected.join(", ") : "none"}; direct rows ${direct}`
}

/**
 * Direct-answer rows to add for `kept` reasoning rows so they make `share` of the set: round(share · kept / (1 − share)),
 * halves up; the 1e-9 keeps a half that binary fractions miss by an ulp (0.6 · 1 / 0.4 = 1.4999…) a half.
 */
export const directCount = (kept: number, share: number): number => {
  if (!(share >= 0 && share < 1)) throw new Error(`directShare must be in [0, 1), got ${share}`)
  return Math.round(share * kept / (1 - share) + 1e-9)
}

/**
 * The direct-answer completion: the reasoning block closed empty, then the answer. It is written after
 * the template's completion prefix, so under a prompt that opens `<think>` it starts at `</think>`;
 * either way prefix + completion is `<think></think><answer>{answer}</answer>`, what the strict format rule accepts.
 */
export const directCompletion = (completionPrefix: string, answer: string): string =>
  `${completionPrefix.trimEnd().endsWith("<think>") ? "" : "<think>"}</think><answer>${answer}</answer>`
