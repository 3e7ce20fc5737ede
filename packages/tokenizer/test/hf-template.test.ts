/**
 * Chat templates of the real Qwen3, Llama 3 and DeepSeek-V3 tokenizer configs: the rendered prompt is
 * what `@huggingface/jinja` renders from the same file, its ids are the reference engine's ids of that
 * text, message text stays data, and the R1 prompt follows each template's `<think>` handling.
 */
import { Template as Jinja } from "@huggingface/jinja"
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { ChatTemplate, Template } from "../src/index.js"
import { dirOf, hfTrusted, load, MODELS } from "./hf.js"

const loaded = Object.fromEntries(await Promise.all(MODELS.map(async (m) => [m, await load(m)]))) as Record<(typeof MODELS)[number], Awaited<ReturnType<typeof load>>>
afterAll(() => MODELS.forEach((m) => loaded[m].codec.free()))

const tokenText = (v: any): string => (typeof v === "string" ? v : v?.content ?? "")

/** The reference: the config's template rendered by `@huggingface/jinja` directly, as transformers' apply_chat_template passes it. */
const reference = (model: (typeof MODELS)[number], messages: Array<ChatTemplate.Message>, extra: Record<string, unknown>): string => {
  const config = JSON.parse(readFileSync(join(dirOf(model), "tokenizer_config.json"), "utf8"))
  return new Jinja(config.chat_template).render({ messages, bos_token: tokenText(config.bos_token), eos_token: tokenText(config.eos_token), ...extra })
}

const CONVERSATIONS: Array<Array<ChatTemplate.Message>> = [
  [{ role: "user", content: "What is 12 + 30?" }],
  [{ role: "system", content: "You are terse." }, { role: "user", content: "Hi" }, { role: "assistant", content: "Hello." }, { role: "user", content: "2+2?" }],
  [{ role: "user", content: "Solve: 3x = 9" }, { role: "assistant", content: "<think>\ndivide by 3\n</think>\n\nx = 3" }, { role: "user", content: "and 4x = 8?" }]
]

describe.each(MODELS)("%s", (model) => {
  const { codec, hf } = loaded[model]
  const chat = codec.chat!

  it("renders a few conversations exactly as @huggingface/jinja does, and encodes them to the reference ids", () => {
    for (const messages of CONVERSATIONS) {
      for (const addGenerationPrompt of [true, false]) {
        const text = ChatTemplate.render(chat, messages, { addGenerationPrompt })
        expect(text).toBe(reference(model, messages, { add_generation_prompt: addGenerationPrompt }))
        expect(Array.from(ChatTemplate.encode(codec, chat, messages, { addGenerationPrompt }))).toEqual(hfTrusted(hf, text))
      }
    }
  })

  it("special-token text in a user message stays data: only the template's own tokens become special ids", () => {
    const evil = Object.keys(codec.specialTokens).slice(0, 20).join(" x ")
    const plain = ChatTemplate.encode(codec, chat, [{ role: "user", content: "q" }])
    const attacked = ChatTemplate.encode(codec, chat, [{ role: "user", content: evil }])
    const specials = new Set(Object.values(codec.specialTokens))
    const only = (ids: Int32Array) => Array.from(ids).filter((id) => specials.has(id))
    expect(only(attacked)).toEqual(only(plain))
    expect(codec.decode(attacked).text).toBe(ChatTemplate.render(chat, [{ role: "user", content: evil }]))
  })

  it("names the template's end of turn, which is a stop id", () => {
    const expected = { qwen3: "<|im_end|>", llama3: "<|eot_id|>", deepseek_v3: "<｜end▁of▁sentence｜>" }[model]
    expect(chat.endOfTurn).toBe(expected)
    expect(codec.specialIds.eot).toBe(codec.specialTokens[expected])
    expect(codec.stopIds).toContain(codec.specialIds.eot)
  })
})

describe("the R1 prompt through the model's template", () => {
  it("Qwen3: the system and user turns, then the assistant's opening; the model opens <think> itself unless thinking is off", () => {
    const { codec } = loaded.qwen3
    const p = ChatTemplate.r1Prompt(codec, codec.chat!, "What is 12 + 30?")
    expect(p.text).toBe(`<|im_start|>system\n${Template.SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n`)
    expect(p.completionPrefix).toBe("")
    const off = ChatTemplate.r1Prompt(codec, codec.chat!, "What is 12 + 30?", { enableThinking: false })
    expect(off.text.endsWith("<|im_start|>assistant\n<think>\n\n</think>\n\n")).toBe(true)
    expect(off.completionPrefix).toBe("<think>\n\n</think>\n\n")
    expect(Array.from(off.ids).slice(-6)).toContain(codec.specialIds.think)
    expect(Array.from(Template.prompt(codec, "model", "What is 12 + 30?"))).toEqual(Array.from(p.ids))
  })

  it("DeepSeek-V3: bos, the system text, <｜User｜> question, <｜Assistant｜>; <think> is ordinary text in this vocabulary", () => {
    const { codec } = loaded.deepseek_v3
    const p = ChatTemplate.r1Prompt(codec, codec.chat!, "What is 12 + 30?")
    expect(p.text).toBe(`<｜begin▁of▁sentence｜>${Template.SYSTEM_PROMPT}<｜User｜>What is 12 + 30?<｜Assistant｜>`)
    expect(p.completionPrefix).toBe("")
    expect(Array.from(p.ids.subarray(0, 1))).toEqual([0])
    expect(Array.from(p.ids).at(-1)).toBe(codec.specialTokens["<｜Assistant｜>"])
  })

  it("DeepSeek-R1-Distill's template, which opens <think> in the generation prompt: the completion starts inside the reasoning", () => {
    const { codec } = loaded.deepseek_v3
    const config = JSON.parse(readFileSync(join(dirOf("deepseek_v3"), "tokenizer_config.json"), "utf8"))
    const tail = "{{'<｜Assistant｜>'}}{% endif %}"
    expect(config.chat_template.endsWith(tail)).toBe(true)
    // The change DeepSeek made to the R1-Distill templates: the generation prompt ends with "<think>\n".
    const distill = ChatTemplate.fromConfig("r1-distill/tokenizer_config.json", { ...config, chat_template: config.chat_template.slice(0, -tail.length) + "{{'<｜Assistant｜><think>\\n'}}{% endif %}" }, codec.specialTokens)!
    const p = ChatTemplate.r1Prompt(codec, distill, "What is 12 + 30?")
    expect(p.text.endsWith("<｜Assistant｜><think>\n")).toBe(true)
    expect(p.completionPrefix).toBe("<think>\n")
    expect(codec.decode(p.ids).text).toBe(p.text)
  })

  it("a codec without a chat template refuses the model prompt format with its name", async () => {
    const { Tokenizer } = await import("../src/index.js")
    const cl = Tokenizer.makeStandard("cl100k_base")
    expect(() => Template.prompt(cl, "model", "q")).toThrow(/cl100k_base has no chat template/)
    cl.free()
  })
})
