import { fileURLToPath } from "node:url"
import { Conformance, Plugin } from "@r1flow/core"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import plugin, { Scripts } from "../src/index.js"

const reward = (language?: string) => Effect.runSync(Plugin.instantiate(plugin, language === undefined ? {} : { language }, "config"))
const score = (completions: Array<string>, language?: string, prompt = "") => Conformance.score(reward(language), completions.map((completion) => ({ completion, prompt })))

describe("Scripts.countWords", () => {
  it("counts words per script; CJK characters one word each; digits and symbols are not words", () => {
    const counts = Scripts.countWords("Hello, мир! 你好 かな カナ 안녕하세요 γεια 42 + √2 café")
    expect(Object.fromEntries(counts)).toEqual({ Latin: 2, Cyrillic: 1, Han: 2, Hiragana: 2, Katakana: 2, Hangul: 1, Greek: 1 })
    expect(Object.fromEntries(Scripts.countWords("abc中文def"))).toEqual({ Latin: 2, Han: 2 })
  })
})

describe("language-consistency reward", () => {
  it("the fraction of chain-of-thought words in the target language (default English)", async () => {
    expect(
      await score([
        "<think>First add two and two.</think><answer>4</answer>",
        "<think>First 我们 add 两个 numbers</think><answer>4</answer>",
        "<think>我们计算</think><answer>four</answer>",
        "no think block at all",
        "<think>2 + 2 = 4</think><answer>4</answer>",
        ""
      ])
    ).toEqual([1, Math.fround(3 / 7), 0, 1, NaN, NaN])
  })

  it("only the chain of thought counts, and a template-opened <think> is honoured", async () => {
    expect(await score(["<think>compute it</think><answer>这是答案</answer>"])).toEqual([1])
    const opened = Conformance.makeInput([{ prompt: "Assistant:", completion: "compute 它</think><answer>x</answer>" }], { completionPrefix: "<think>" })
    expect(Array.from(await reward("en").score(opened))).toEqual([0.5])
  })

  it("other target languages", async () => {
    expect(await score(["<think>我们计算 two</think>"], "zh")).toEqual([Math.fround(4 / 5)])
    expect(await score(["<think>ひらがなとカタカナと漢字</think>"], "ja")).toEqual([1])
    expect(await score(["<think>Считаем вместе</think>"], "ru")).toEqual([1])
    const err = await Effect.runPromise(Effect.flip(Plugin.instantiate(plugin, { language: "klingon" }, "rewards[0].config")))
    expect(err.message).toContain("rewards[0].config.language")
  })

  it("1e6-character outputs", async () => {
    const mixed = "<think>" + "word 字 ".repeat(140_000) + "</think>"
    const rows = [mixed, "<think>".repeat(150_000), "<think>" + "。".repeat(1e6)].map((completion) => ({ completion, prompt: "" }))
    expect(await Conformance.score(Effect.runSync(Plugin.instantiate(plugin, { mode: "script" }, "config")), rows)).toEqual([0.5, 1, NaN])
    // Trigram mode: 40 000 sentences of 5 words (a degenerate loop: the one distinct sentence is identified once).
    const started = performance.now()
    expect(await score(["<think>" + "We add the two numbers. ".repeat(40_000) + "</think>", "<think>" + "Nous ajoutons les deux nombres. ".repeat(30_000)])).toEqual([1, 0])
    console.log(`trigram mode, 2 CoTs of 1e6 characters, 40 000 and 30 000 sentences: ${(performance.now() - started).toFixed(0)} ms`)
  })

  it("passes the conformance suite (en and zh)", async () => {
    for (const language of ["en", "zh"]) for (const r of await Conformance.run(plugin, { config: { language } })) expect(r.ok, `${r.check}: ${r.detail}`).toBe(true)
  })

  it("loads through the plugin registry", async () => {
    const loaded = await Effect.runPromise(Plugin.load(fileURLToPath(new URL("../src/index.ts", import.meta.url)), { kind: "reward" }))
    expect(loaded.name).toBe("language-consistency")
  })
})
