/**
 * `@r1flow/reward-countdown`: TinyZero's countdown reward.
 *
 *   0    no `<answer>…</answer>` (the last complete block is used)
 *   0.1  the answer uses numbers other than exactly the given multiset, has characters other than
 *        digits, `+ - * / ( )` and whitespace, does not evaluate (syntax, division by zero), or misses the target
 *   1.0  it evaluates to the target within 1e-5
 *   NaN  the row's metadata has no `numbers` (integer array) and `target` (number)
 *
 * Evaluation is by our own parser (`Expression`), never `eval`: `2**10` is a syntax error here.
 */
import { Reward } from "@r1flow/core"
import { Schema } from "effect"
import * as Expression from "./Expression.js"

export { Expression }

/** TinyZero's scores. */
export const SCORE = 1.0
export const FORMAT_SCORE = 0.1

/** The last `<answer>` followed by a `</answer>`, up to the first such close; null when none. */
export const lastAnswer = (completion: string): string | null => {
  const lastClose = completion.lastIndexOf("</answer>")
  if (lastClose < 0) return null
  const open = completion.lastIndexOf("<answer>", lastClose)
  if (open < 0) return null
  return completion.slice(open + 8, completion.indexOf("</answer>", open)).trim()
}

const sameMultiset = (a: ReadonlyArray<number>, b: ReadonlyArray<number>): boolean => {
  if (a.length !== b.length) return false
  const x = [...a].sort((p, q) => p - q)
  const y = [...b].sort((p, q) => p - q)
  return x.every((v, i) => v === y[i])
}

/** Scores one completion against a countdown instance. */
export const scoreOne = (completion: string, numbers: ReadonlyArray<number>, target: number): number => {
  const equation = lastAnswer(completion)
  if (equation === null) return 0
  if (!Expression.allowedCharacters(equation) || !sameMultiset(Expression.numbersIn(equation), numbers)) return FORMAT_SCORE
  const value = Expression.evaluate(equation)
  return value !== null && Math.abs(value - target) < 1e-5 ? SCORE : FORMAT_SCORE
}

const instance = (metadata: Readonly<Record<string, unknown>>): { numbers: Array<number>; target: number } | null => {
  const { numbers, target } = metadata
  if (!Array.isArray(numbers) || !numbers.every((n) => Number.isInteger(n)) || typeof target !== "number" || !Number.isFinite(target)) return null
  return { numbers: numbers as Array<number>, target }
}

export default Reward.define({
  name: "countdown",
  version: "0.1.0",
  description: "TinyZero countdown rule: 1 for an <answer> equation that uses exactly the given numbers and hits the target, 0.1 for a wrong one, 0 for none",
  config: Schema.Struct({}),
  make: () => ({
    score: (input) => {
      const out = new Float32Array(input.rows)
      for (let i = 0; i < input.rows; i++) {
        const task = instance(input.metadata[i])
        out[i] = task === null ? NaN : scoreOne(input.completions[i], task.numbers, task.target)
      }
      return out
    }
  })
})
