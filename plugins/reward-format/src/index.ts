/**
 * `@r1flow/reward-format`: DeepSeek-R1's format reward.
 *
 *   mode "strict"    1 when the completion is exactly `<think>…</think><answer>…</answer>` (whitespace allowed around), else 0
 *   mode "soft"      1 when a think block is followed by an answer block anywhere in it, else 0
 *   mode "tag-count" 0.25 per tag (`<think>`, `</think>`, `<answer>`, `</answer>`) present exactly once
 *
 * Every completion gets a score (never NaN): a missing format is a score of 0, not "not applicable".
 */
import { Reward } from "@r1flow/core"
import { Effect, Schema } from "effect"
import * as Format from "./Format.js"

/** Config: `{ mode?: "strict" | "soft" | "tag-count" }` (default `"strict"`). */
export const Config = Schema.Struct({
  mode: Schema.Literals(["strict", "soft", "tag-count"]).pipe(Schema.withDecodingDefaultKey(Effect.succeed("strict" as const)))
})

export { Format }

export default Reward.define({
  name: "format",
  version: "0.1.0",
  description: "R1 <think>…</think><answer>…</answer> format: strict, soft, or tag-count partial credit",
  config: Config,
  make: (config) => {
    const rule = config.mode === "strict" ? (t: string) => (Format.strict(t) ? 1 : 0) : config.mode === "soft" ? (t: string) => (Format.soft(t) ? 1 : 0) : Format.tagCount
    return {
      score: (input) => {
        const out = new Float32Array(input.rows)
        for (let i = 0; i < input.rows; i++) out[i] = rule(Format.withPrefix(input.completionPrefix, input.completions[i]))
        return out
      }
    }
  }
})
