/**
 * `@r1flow/reward-length`: length shaping (see `Length` for the equations).
 *
 *   mode "cosine"    cosine length-scaling of correct and wrong answers. Correctness is read from the
 *                    column of a reward listed before this one (default `reward_math-accuracy`; a row
 *                    is correct when its value ≥ `correctThreshold`); NaN where that value is NaN.
 *                    A completion that hit the max length (`finish_reason` "length" or L ≥ maxLength) gets `exceed`.
 *   mode "overlong"  DAPO's soft overlong penalty near `maxLength` (buffer default maxLength / 4).
 *
 * Lengths are completion token counts. Since the cosine mode already encodes correctness, it usually
 * replaces the accuracy reward in the total: give `math-accuracy` weight 0 and this one weight 1.
 */
import { Reward } from "@r1flow/core"
import type { Float32, Vector } from "apache-arrow"
import { Effect, Schema } from "effect"
import * as Length from "./Length.js"

export { Length }

const withDefault = <A extends number>(schema: Schema.Codec<A, A>, value: A) => schema.pipe(Schema.withDecodingDefaultKey(Effect.succeed(value)))

/** Config (`maxLength` required; the cosine defaults are the paper's). */
export const Config = Schema.Struct({
  mode: Schema.Literals(["cosine", "overlong"]).pipe(Schema.withDecodingDefaultKey(Effect.succeed("cosine" as const))),
  maxLength: Schema.Int.check(Schema.isGreaterThan(0)),
  correctnessColumn: Schema.String.pipe(Schema.withDecodingDefaultKey(Effect.succeed("reward_math-accuracy"))),
  correctThreshold: withDefault(Schema.Finite, 1),
  correctAtZero: withDefault(Schema.Finite, 2),
  correctAtMax: withDefault(Schema.Finite, 1),
  wrongAtZero: withDefault(Schema.Finite, -10),
  wrongAtMax: withDefault(Schema.Finite, 0),
  exceed: withDefault(Schema.Finite, -10),
  buffer: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThan(0)))
})

export default Reward.define({
  name: "length",
  version: "0.1.0",
  description: "Length shaping: cosine scaling of correct/wrong answers (Demystifying Long CoT) or DAPO's soft overlong penalty",
  config: Config,
  make: (config) => {
    const buffer = config.buffer ?? Math.max(1, Math.floor(config.maxLength / 4))
    if (config.mode === "overlong" && buffer >= config.maxLength) throw new Error(`buffer (${buffer}) must be less than maxLength (${config.maxLength})`)
    return {
      score: (input) => {
        const out = new Float32Array(input.rows)
        const lengthOf = (i: number) => input.completionIds.offsets[i + 1] - input.completionIds.offsets[i]
        if (config.mode === "overlong") {
          for (let i = 0; i < input.rows; i++) out[i] = Length.overlong(lengthOf(i), config.maxLength, buffer)
          return out
        }
        const column = input.batch.getChild(config.correctnessColumn) as Vector<Float32> | null
        if (column === null) {
          throw new Error(`length (cosine) reads correctness from the column "${config.correctnessColumn}", which no reward listed before it wrote`)
        }
        for (let i = 0; i < input.rows; i++) {
          const correctness = column.get(i)
          const length = lengthOf(i)
          if (correctness === null || Number.isNaN(correctness)) out[i] = NaN
          else if (input.finishReasons[i] === "length" || length >= config.maxLength) out[i] = config.exceed
          else if (correctness >= config.correctThreshold) out[i] = Length.cosine(length, config.maxLength, config.correctAtZero, config.correctAtMax)
          else out[i] = Length.cosine(length, config.maxLength, config.wrongAtZero, config.wrongAtMax)
        }
        return out
      }
    }
  }
})
