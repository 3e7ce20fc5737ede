/**
 * `@r1flow/reward-language-consistency`: DeepSeek-R1's language-consistency reward, "the
 * proportion of target language words in the CoT".
 *
 * The chain of thought is the `<think>…</think>` block (the whole completion when there is none).
 * Two modes:
 *   - `trigram` (default): each sentence is identified by franc-min's trigram model (`Trigram`), so
 *     French or German reasoning is not English; sentences under 5 words fall back to the script.
 *   - `script` (the fast mode): words are counted by Unicode script (`Scripts`), so the target
 *     language stands for its script: English is any Latin-script word.
 * On the 55 hand-labelled chains of `test/LabelledSet.ts` (consistent English iff score ≥ 0.9)
 * trigram is right on 55/55 and script on 25/55 (it calls every Latin-script chain English).
 * NaN when the chain of thought has no words.
 */
import { Reward } from "@r1flow/core"
import { Effect, Schema } from "effect"
import * as Scripts from "./Scripts.js"
import * as Trigram from "./Trigram.js"

export { Scripts, Trigram }

/** How words are assigned to a language: by sentence identification (`trigram`) or by script (`script`). */
export const Mode = Schema.Literals(["trigram", "script"])

/**
 * Config: `{ language?: "en" | "zh" | …, mode?: "trigram" | "script" }` (defaults `"en"`, `"trigram"`);
 * `language` is one of `Scripts.LANGUAGES`, and in trigram mode one franc-min identifies (`Trigram.CODES`).
 */
export const Config = Schema.Struct({
  language: Schema.Literals(Object.keys(Scripts.LANGUAGES) as Array<Scripts.Language>).pipe(Schema.withDecodingDefaultKey(Effect.succeed("en" as Scripts.Language))),
  mode: Mode.pipe(Schema.withDecodingDefaultKey(Effect.succeed("trigram" as const)))
}).check(
  Schema.makeFilter((c) =>
    c.mode === "script" || Trigram.identifiable(c.language)
      ? undefined
      : { path: ["language"], issue: `"${c.language}" cannot be identified by the trigram model (franc-min knows ${Object.keys(Trigram.CODES).join(", ")}); use mode "script" for it` }
  )
)

export default Reward.define({
  name: "language-consistency",
  version: "0.1.0",
  description: "R1 language consistency: the fraction of chain-of-thought words in the target language (by sentence identification, or by script)",
  config: Config,
  make: (config) => {
    const { language } = config
    const share =
      config.mode === "trigram" && Trigram.identifiable(language)
        ? (text: string) => Trigram.consistency(text, language)
        : (text: string) => Scripts.consistency(text, Scripts.LANGUAGES[language])
    return {
      score: (input) => {
        const out = new Float32Array(input.rows)
        for (let i = 0; i < input.rows; i++) out[i] = share(Scripts.chainOfThought(input.completionPrefix, input.completions[i]))
        return out
      }
    }
  }
})
