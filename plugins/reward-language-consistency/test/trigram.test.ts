import { fileURLToPath } from "node:url"
import { Conformance, Plugin, RewardStage } from "@r1flow/core"
import { Effect } from "effect"
import { data } from "franc-min/data.js"
import { expressions } from "franc-min/expressions.js"
import { describe, expect, it } from "vitest"
import plugin, { Scripts, Trigram } from "../src/index.js"
import * as LabelledSet from "./LabelledSet.js"

const reward = (config: object) => Effect.runSync(Plugin.instantiate(plugin, config, "config"))
const score = (completions: Array<string>, config: object = {}) => Conformance.score(reward(config), completions.map((completion) => ({ completion, prompt: "" })))
const think = (cot: string) => `<think>${cot}</think><answer>7</answer>`

describe("Trigram.segments", () => {
  it("splits on sentence ends followed by space, CJK full stops and line breaks; decimals stay whole", () => {
    expect(Trigram.segments("It is 3.5 m. Next step!\nThen this? 好。对！ ok")).toEqual(["It is 3.5 m.", "Next step!", "Then this?", "好。", "对！", "ok"])
  })
})

describe("Trigram.CODES", () => {
  it("every code is a language franc-min can answer with", () => {
    const known = new Set([...Object.values(data).flatMap((languages) => Object.keys(languages)), ...Object.keys(expressions)])
    for (const [language, code] of Object.entries(Trigram.CODES)) expect(known.has(code), `${language} → ${code}`).toBe(true)
    expect(Object.keys(Scripts.LANGUAGES).filter((l) => !Trigram.identifiable(l))).toEqual(["he"])
  })
})

describe("trigram mode", () => {
  const french = "D'abord je dois trouver combien de pommes il reste. Elle avait douze pommes et en a donné cinq."
  const german = "Zuerst muss ich herausfinden, wie viele Äpfel übrig sind. Sie hatte zwölf Äpfel und hat fünf verschenkt."
  const spanish = "Primero tengo que saber cuántas manzanas quedan en la caja. Ella tenía doce manzanas y regaló cinco."
  const english = "First I need to find how many apples are left. She had twelve apples and gave away five of them."

  it("tells English from French, German and Spanish chains, which the script proxy calls English", async () => {
    expect(await score([english, french, german, spanish].map(think))).toEqual([1, 0, 0, 0])
    expect(await score([english, french, german, spanish].map(think), { mode: "script" })).toEqual([1, 1, 1, 1])
    expect(await score([english, french, german, spanish].map(think), { language: "fr" })).toEqual([0, 1, 0, 0])
    expect(await score([english, french, german, spanish].map(think), { language: "de" })).toEqual([0, 0, 1, 0])
  })

  it("an English chain's reflections count as English where franc-min alone places them in Dutch or French by a small margin", async () => {
    // franc-min scores English at 0.82, 0.82 and 0.98 of its best for these (MARGIN); "Wait, let me double-check that." (0.40) stays French
    const reflections = ["Hmm, before I answer, let me verify it.", "Let me verify before answering.", "Let me check it another way."]
    expect(reflections.map((r) => Trigram.identify(r.replace(/[^A-Za-z ]/g, " ")))).toEqual(["nld", "nld", "fra"])
    const chain = [
      "We want the value of 36 + 6.", "Column by column from the ones, carrying:", "36+6: 6+6=12 c1, 3+1=4 -> 42.", "So 36 + 6 = 42.",
      ...reflections, "If the sum is right, taking 6 away from 42 gives back 36: 42-6: 12-6=6 b1, 4-1=3 -> 36.", "That is 36, the first number.", "So the answer is 42."
    ].join("\n")
    expect(Trigram.consistency(chain, "en")).toBe(1)
    // the same reflections inside a French chain are not rescued: the chain is French
    const french = ["Nous voulons la valeur de trente-six plus six, colonne par colonne.", ...reflections, "Donc la réponse est quarante-deux, et je vérifie encore une fois."].join("\n")
    expect(Trigram.consistency(french, "en")).toBeLessThan(0.5)
  })

  it("a mixed chain scores its English words' share; short segments count by script", async () => {
    // 10 English words, 9 + 5 French; "Wait" (1 word) and "Yes it does" (3) are too short to judge: they count.
    const mixed = "First I need to find how many apples are left. Elle avait douze pommes et en a donné cinq. Donc il en reste sept."
    const short = "Wait.\nIl faut multiplier le prix par le nombre de personnes. Yes it does."
    expect(await score([think(mixed), think(short)])).toEqual([Math.fround(10 / 24), Math.fround(4 / 14)])
    // A Han word in an English sentence is never English, and does not sway the sentence's identification.
    // (Han: one word per character.)
    expect(await score([think("First we add the two numbers 我们 together here.")])).toEqual([Math.fround(8 / 10)])
  })

  it("maths: numbers and symbols are not words; a chain of them alone is NaN, a few words count by script", async () => {
    expect(await score([think("3 + 4 = 7, 12 * 4 = 48"), think("3 + 4 = 7, carry the 1"), think("12 * 4 = 48. 48 - 6 = 42. The answer is 42.")])).toEqual([NaN, 1, 1])
  })

  it("targets outside Latin script keep the script proxy (franc-min calls this Russian sentence Bulgarian)", async () => {
    expect(await score([think("我们计算 two")], { language: "zh" })).toEqual([Math.fround(4 / 5)])
    expect(await score([think("庭の長さは幅の二倍です。")], { language: "ja" })).toEqual([1])
    expect(await score([think("Считаем вместе все яблоки в корзине сейчас.")], { language: "ru" })).toEqual([1])
  })
})

describe("config", () => {
  const refused = (config: object) => Effect.runPromise(Effect.flip(Plugin.instantiate(plugin, config, "rewards[0].config")))

  it("refuses in trigram mode a language franc-min cannot identify, naming the key; script mode takes it", async () => {
    const err = await refused({ language: "he" })
    expect(err.message).toContain("rewards[0].config.language")
    expect(err.message).toContain('"he" cannot be identified by the trigram model')
    expect(await score([think("שלום עולם")], { language: "he", mode: "script" })).toEqual([1])
    expect((await refused({ mode: "bigram" })).message).toContain("rewards[0].config.mode")
  })

  it("passes the conformance suite in both modes", async () => {
    for (const mode of ["trigram", "script"]) for (const r of await Conformance.run(plugin, { config: { mode } })) expect(r.ok, `${mode} ${r.check}: ${r.detail}`).toBe(true)
  })
})

describe("in a reward worker thread", () => {
  it("loads franc-min and scores as in this thread", async () => {
    // The worker imports the built dist/ (test/build.ts, the global setup, brings it up to date).
    const dist = fileURLToPath(new URL("../dist/index.js", import.meta.url))
    const config = await Effect.runPromise(RewardStage.check({ rewards: [{ plugin: dist, name: "language" }] }))
    const rows = [think("First I need to find how many apples are left."), think("Elle avait douze pommes et en a donné cinq.")].map((completion) => ({ completion, prompt: "" }))
    const stage = await Effect.runPromise(RewardStage.load(config))
    const out = await Effect.runPromise(stage.run(Conformance.makeBatch(rows))).finally(() => Effect.runPromise(stage.close))
    expect(Array.from(out.getChild("reward_language")!.toArray() as Float32Array)).toEqual([1, 0])
  })
})

describe("measurement on the labelled set (test/LabelledSet.ts)", () => {
  it("trigram tells consistent English from mixed or other-language chains better than the script proxy", async () => {
    const chains = LabelledSet.all
    const accuracy = async (mode: string) => {
      const scores = await score(chains.map((c) => think(c.text)), { mode })
      const right = chains.filter((c, i) => (scores[i] >= 0.9) === c.consistent)
      return { right: right.length, wrong: chains.filter((c) => !right.includes(c)).map((c) => c.language) }
    }
    const [trigram, script] = [await accuracy("trigram"), await accuracy("script")]
    console.log(`labelled set, ${chains.length} chains, consistent English iff score >= 0.9: trigram ${trigram.right}/${chains.length} (wrong: ${trigram.wrong.join(" ") || "none"}), script ${script.right}/${chains.length} (wrong: ${script.wrong.join(" ")})`)
    // The script proxy calls every Latin-script chain English: the mixed and the six Latin-script languages.
    const latinOther = chains.filter((c) => !c.consistent && !["zh", "ja", "ru"].includes(c.language)).length
    expect(script.right).toBe(chains.length - latinOther)
    expect(trigram.right).toBeGreaterThanOrEqual(chains.length - 1)
  })
})
