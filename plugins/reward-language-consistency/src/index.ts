/**
 * `@r1flow/reward-language-consistency`: DeepSeek-R1's language-consistency reward, "the
 * proportion of target language words in the CoT".
 *
 * The chain of thought is the `<think>…</think>` block (the whole completion when there is none);
 * words are counted by Unicode script (`Scripts`), so the target language stands for its script:
 * English is any Latin-script word. NaN when the chain of thought has no words.
 */
import { Reward } from "@r1flow/core"
import { Effect, Schema } from "effect"
import * as Scripts from "./Scripts.js"

export { Scripts }

/** Config: `{ language?: "en" | "zh" | … }` (default `"en"`), one of `Scripts.LANGUAGES`. */
export const Config = Schema.Struct({
  language: Schema.Literals(Object.keys(Scripts.LANGUAGES) as Array<Scripts.Language>).pipe(Schema.withDecodingDefaultKey(Effect.succeed("en" as Scripts.Language)))
})

export default Reward.define({
  name: "language-consistency",
  version: "0.1.0",
  description: "R1 language consistency: the fraction of chain-of-thought words in the target language's script",
  config: Config,
  make: (config) => {
    const scripts = Scripts.LANGUAGES[config.language]
    return {
      score: (input) => {
        const out = new Float32Array(input.rows)
        for (let i = 0; i < input.rows; i++) out[i] = Scripts.consistency(Scripts.chainOfThought(input.completionPrefix, input.completions[i]), scripts)
        return out
      }
    }
  }
})
