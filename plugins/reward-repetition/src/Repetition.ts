/**
 * N-gram repetition (Yeo et al. 2025; open-r1's `repetition_penalty`): over the lower-cased
 * whitespace-separated words of a completion,
 *
 *   penalty = maxPenalty · (1 − distinct n-grams / total n-grams)      (maxPenalty ≤ 0)
 *
 * 0 for text with fewer than n words. Words are interned to integer ids first, so n-gram keys stay short.
 */

/** The fraction of the n-grams of `text` that repeat an earlier one, in [0, 1). */
export const repeatedFraction = (text: string, n: number): number => {
  const ids = new Map<string, number>()
  const words: Array<number> = []
  for (const m of text.toLowerCase().matchAll(/\S+/g)) {
    let id = ids.get(m[0])
    if (id === undefined) {
      id = ids.size
      ids.set(m[0], id)
    }
    words.push(id)
  }
  const total = words.length - n + 1
  if (total <= 0) return 0
  const seen = new Set<string>()
  for (let i = 0; i < total; i++) seen.add(n === 1 ? String(words[i]) : words.slice(i, i + n).join(","))
  return 1 - seen.size / total
}
