import { existsSync, readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { Conformance, Plugin, Rng } from "@r1flow/core"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import plugin, { MathAnswer } from "../src/index.js"

const reward = Effect.runSync(Plugin.instantiate(plugin, {}, "config"))
const score = (pairs: Array<[completion: string, answer: string | null]>) => Conformance.score(reward, pairs.map(([completion, answer]) => ({ completion, answer })))

describe("extraction", () => {
  it("takes the last complete <answer> block, a \\boxed inside it, else \\boxed, else ####", () => {
    expect(MathAnswer.extract("<think>maybe 3</think><answer> 4 </answer>")).toBe("4")
    expect(MathAnswer.extract("<answer>1</answer> then <answer>2</answer>")).toBe("2")
    expect(MathAnswer.extract("<answer>so \\boxed{7} is it</answer>")).toBe("7")
    expect(MathAnswer.extract("thus $\\boxed{\\frac{1}{\\sqrt{2}}}$")).toBe("\\frac{1}{\\sqrt{2}}")
    expect(MathAnswer.extract("\\boxed{1} no wait \\boxed{2}")).toBe("2")
    expect(MathAnswer.extract("\\boxed 5$")).toBe("5")
    expect(MathAnswer.extract("work\n#### 1,234\n")).toBe("1,234")
    expect(MathAnswer.extract("no answer here 42")).toBeNull()
  })

  it("adversarial: answers outside the tags, nested or unclosed tags and braces", () => {
    expect(MathAnswer.extract("<answer></answer> 72")).toBeNull()
    expect(MathAnswer.extract("72 <answer>")).toBeNull()
    expect(MathAnswer.extract("<answer>72")).toBeNull()
    expect(MathAnswer.extract("<answer><answer>7</answer></answer>")).toBe("7")
    expect(MathAnswer.extract("<answer>1</answer> and <answer>2")).toBe("1")
    expect(MathAnswer.extract("\\boxed{\\frac{3}{4}")).toBeNull()
    expect(MathAnswer.extract("\\boxed{{{{1}}}}")).toBe("{{{1}}}")
  })
})

describe("equivalence", () => {
  const same = (a: string, b: string) => expect(MathAnswer.equivalent(a, b), `${a} ≡ ${b}`).toBe(true)
  const differ = (a: string, b: string) => expect(MathAnswer.equivalent(a, b), `${a} ≢ ${b}`).toBe(false)

  it("integers, decimals, signs, thousands separators, currency and percent", () => {
    same("18", "18")
    same("18.0", "18")
    same("+18", "18")
    same("−3", "-3")
    same("1,234,567", "1234567")
    same("$1,234.50", "1234.5")
    same("\\$18", "18")
    same("18 dollars", "18")
    same("50%", "50")
    same("50\\%", "0.5")
    same(".5", "0.5")
    same("x = 5", "5")
    same("1e3", "1000")
    differ("18", "-18")
    differ("1,234", "1.234")
    differ("1000000001", "1000000000")
    differ("17", "18")
  })

  it("fractions, LaTeX fractions, mixed numbers and wrappers", () => {
    same("3/4", "0.75")
    same("\\frac{3}{4}", "3/4")
    same("\\dfrac{3}{4}", "0.75")
    same("\\tfrac34", "0.75")
    same("-\\frac{3}{4}", "-0.75")
    same("\\frac{-3}{4}", "-3/4")
    same("1 1/2", "1.5")
    same("1\\frac{1}{2}", "3/2")
    same("$\\text{18}$", "18")
    same("\\text{18 apples}", "18")
    same("\\left( 7 \\right)", "7")
    differ("3/4", "4/3")
    differ("\\frac{1}{0}", "1")
  })

  it("numeric tolerance applies to non-integers only", () => {
    expect(MathAnswer.equivalent("0.3333333", "1/3", 1e-6)).toBe(true)
    expect(MathAnswer.equivalent("0.333", "1/3", 1e-6)).toBe(false)
    expect(MathAnswer.equivalent("0.333", "1/3", 1e-2)).toBe(true)
  })

  it("non-numeric answers compare as normalised text", () => {
    same("\\sqrt{2}", "\\sqrt 2")
    same("Yes", "yes")
    differ("x+1", "x-1")
    differ("", "")
  })
})

describe("math-accuracy reward", () => {
  it("scores rows: 1 correct, 0 wrong or missing, NaN without a reference", async () => {
    expect(
      await score([
        ["<think>12*11=132</think><answer>132</answer>", "132"],
        ["<think>..</think><answer>131</answer>", "132"],
        ["the answer is 132", "132"],
        ["<answer>132</answer>", null],
        ["Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", "#### 72"],
        ["\\boxed{\\dfrac{3}{4}}", "\\frac34"],
        ["", "1"]
      ])
    ).toEqual([1, 0, 0, NaN, 1, 1, 0])
  })

  it("1e6-character outputs stay fast", async () => {
    const big = "x".repeat(1e6)
    expect(await score([[big + "<answer>5</answer>", "5"], ["<answer>" + "\\boxed{".repeat(150_000) + "</answer>", "5"], ["\\text{".repeat(150_000) + "#### 5", "5"]])).toEqual([1, 0, 1])
  })

  it("passes the conformance suite", async () => {
    for (const r of await Conformance.run(plugin)) expect(r.ok, `${r.check}: ${r.detail}`).toBe(true)
  })

  it("loads through the plugin registry", async () => {
    const loaded = await Effect.runPromise(Plugin.load(fileURLToPath(new URL("../src/index.ts", import.meta.url)), { kind: "reward" }))
    expect(loaded.name).toBe("math-accuracy")
  })
})

// ../shared/datasets/gsm8k/test.jsonl relative to the repo root (two levels above this package).
const gsm8k = fileURLToPath(new URL("../../../../shared/datasets/gsm8k/test.jsonl", import.meta.url))

describe.skipIf(!existsSync(gsm8k))("GSM8K reference solutions", () => {
  it("scores every reference solution correct against its final answer, and a shuffled pairing ≈ 0", async () => {
    const rows = readFileSync(gsm8k, "utf8").split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as { answer: string })
    const finals = rows.map((r) => r.answer.slice(r.answer.lastIndexOf("####") + 4).trim())
    const matched = await score(rows.map((r, i) => [r.answer, finals[i]]))
    const order = Rng.make(0, "gsm8k-shuffle").shuffle(rows.map((_, i) => i))
    const shuffled = await score(rows.map((r, i) => [r.answer, finals[order[i] === i ? (i + 1) % rows.length : order[i]]]))
    const rate = (xs: Array<number>) => xs.reduce((a, b) => a + b, 0) / xs.length
    console.log(`GSM8K test (${rows.length} rows): matched pairing ${(100 * rate(matched)).toFixed(2)} % correct, shuffled pairing ${(100 * rate(shuffled)).toFixed(2)} % correct`)
    expect(rate(matched)).toBe(1)
    expect(rate(shuffled)).toBeLessThan(0.03)
  })
})
if (!existsSync(gsm8k)) console.warn(`skipping the GSM8K check: ${gsm8k} is absent`)
