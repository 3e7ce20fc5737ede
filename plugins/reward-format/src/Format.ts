/**
 * DeepSeek-R1's format rule: the completion puts its reasoning in `<think>…</think>` and then its
 * answer in `<answer>…</answer>`. Everything here is a linear scan with `indexOf`; no regex, so no
 * backtracking on adversarial 1 MB outputs.
 *
 * When the template opened the tag for the model (the batch's completion prefix is `<think>`), the
 * completion is read as if it started with it. The prompt's text is never read: it is the user's
 * question, and a question ending in a literal `<think>` opens nothing.
 */

const TAGS = ["<think>", "</think>", "<answer>", "</answer>"] as const

const isSpace = (c: number) => c === 32 || c === 9 || c === 10 || c === 13

/** The completion as the format rule sees it: after the prefix the template opened it with (`Reward.Input.completionPrefix`). */
export const withPrefix = (completionPrefix: string, completion: string): string => completionPrefix + completion

const count = (text: string, tag: string): number => {
  let n = 0
  for (let at = text.indexOf(tag); at >= 0; at = text.indexOf(tag, at + tag.length)) n++
  return n
}

const skipSpace = (text: string, at: number): number => {
  while (at < text.length && isSpace(text.charCodeAt(at))) at++
  return at
}

/**
 * Strict: the whole completion is `<think>…</think>` then `<answer>…</answer>`, with only
 * whitespace around and between them, each tag exactly once, and no tag inside another block.
 */
export const strict = (text: string): boolean => {
  for (const tag of TAGS) if (count(text, tag) !== 1) return false
  let at = skipSpace(text, 0)
  if (!text.startsWith("<think>", at)) return false
  const close = text.indexOf("</think>", at)
  if (close < 0) return false
  at = skipSpace(text, close + "</think>".length)
  if (!text.startsWith("<answer>", at)) return false
  const end = text.indexOf("</answer>", at)
  if (end < 0) return false
  // One of each tag and the order above leave no tag inside a block; only trailing space may follow.
  return skipSpace(text, end + "</answer>".length) === text.length
}

/** Soft: a `<think>…</think>` block is followed, anywhere later, by an `<answer>…</answer>` block. */
export const soft = (text: string): boolean => {
  const open = text.indexOf("<think>")
  if (open < 0) return false
  const close = text.indexOf("</think>", open + 7)
  if (close < 0) return false
  const answer = text.indexOf("<answer>", close + 8)
  if (answer < 0) return false
  return text.indexOf("</answer>", answer + 8) >= 0
}

/** Tag count: 0.25 for each of the four tags that appears exactly once (a dense signal early in training). */
export const tagCount = (text: string): number => {
  let score = 0
  for (const tag of TAGS) if (count(text, tag) === 1) score += 0.25
  return score
}
