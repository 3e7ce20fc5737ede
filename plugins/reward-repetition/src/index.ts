/**
 * `@r1flow/reward-repetition`: the n-gram repetition penalty (see `Repetition`). Scores are in
 * [maxPenalty, 0]: 0 for text that never repeats an n-gram, approaching `maxPenalty` as it loops.
 */
import { Reward } from "@r1flow/core"
import { Effect, Schema } from "effect"
import * as Repetition from "./Repetition.js"

export { Repetition }

/** Config: `{ ngram?: number (default 3), maxPenalty?: number ≤ 0 (default -1) }`. */
export const Config = Schema.Struct({
  ngram: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(3))),
  maxPenalty: Schema.Finite.check(Schema.isLessThanOrEqualTo(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(-1)))
})

export default Reward.define({
  name: "repetition",
  version: "0.1.0",
  description: "N-gram repetition penalty: maxPenalty × the fraction of repeated word n-grams",
  config: Config,
  make: (config) => ({
    score: (input) => {
      const out = new Float32Array(input.rows)
      // `+ 0` turns -0 (maxPenalty × 0) into 0.
      for (let i = 0; i < input.rows; i++) out[i] = config.maxPenalty * Repetition.repeatedFraction(input.completions[i], config.ngram) + 0
      return out
    }
  })
})
