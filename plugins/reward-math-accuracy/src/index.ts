/**
 * `@r1flow/reward-math-accuracy`: DeepSeek-R1's accuracy reward for math with a final answer.
 *
 * 1 when the completion's final answer (`<answer>…</answer>`, `\boxed{…}` or GSM8K's `#### …`) is
 * mathematically equivalent to the reference answer, 0 when it is not or when there is none, and
 * NaN when the row has no reference answer. See `MathAnswer` (in core, so that evaluation votes by the
 * same rules) for the extraction and equivalence rules.
 */
import { MathAnswer, Reward } from "@r1flow/core"
import { Effect, Schema } from "effect"

/** Config: `{ tolerance?: number }`: relative tolerance for non-integer answers (default 1e-6). */
export const Config = Schema.Struct({
  tolerance: Schema.Finite.check(Schema.isGreaterThanOrEqualTo(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(1e-6)))
})

export { MathAnswer }

export default Reward.define({
  name: "math-accuracy",
  version: "0.1.0",
  description: "1 when the final answer (<answer>, \\boxed or ####) equals the reference mathematically, else 0; NaN without a reference",
  config: Config,
  make: (config) => ({
    score: (input) => {
      const out = new Float32Array(input.rows)
      for (let i = 0; i < input.rows; i++) {
        const reference = input.answers[i]
        if (reference === null || reference.trim() === "") {
          out[i] = NaN
          continue
        }
        const predicted = MathAnswer.extract(input.completions[i])
        out[i] = predicted !== null && MathAnswer.equivalent(predicted, MathAnswer.referenceAnswer(reference), config.tolerance) ? 1 : 0
      }
      return out
    }
  })
})
