import { fileURLToPath } from "node:url"
import { Conformance, Plugin } from "@r1flow/core"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import plugin, { Expression } from "../src/index.js"

const reward = Effect.runSync(Plugin.instantiate(plugin, {}, "config"))
const task = { numbers: [25, 7, 3], target: 54 }
const score = (completions: Array<string>, metadata: Record<string, unknown> | null = task) =>
  Conformance.score(reward, completions.map((completion) => ({ completion, metadata })))

describe("Expression.evaluate", () => {
  it("evaluates + - * / with precedence, parentheses and unary signs", () => {
    expect(Expression.evaluate("(25 - 7) * 3")).toBe(54)
    expect(Expression.evaluate("25 - 7 * 3")).toBe(4)
    expect(Expression.evaluate("100 / 4 / 5")).toBe(5)
    expect(Expression.evaluate("10 - 4 - 3")).toBe(3)
    expect(Expression.evaluate("-3 + 5")).toBe(2)
    expect(Expression.evaluate("2 * -(3 + 1)")).toBe(-8)
    expect(Expression.evaluate("((((7))))")).toBe(7)
  })

  it("rejects anything that is not an expression", () => {
    for (const bad of ["2**10", "2 3", "(1+2", "1+2)", "()", "1+", "*1", "1/0", "1/(2-2)", "process.exit()", "1.5+2", "2^3", "", "Math.max(1,2)"]) {
      expect(Expression.evaluate(bad), bad).toBeNull()
    }
  })

  it("a million nested parentheses do not overflow the stack", () => {
    expect(Expression.evaluate("(".repeat(500_000) + "1" + ")".repeat(500_000))).toBe(1)
    expect(Expression.evaluate("(".repeat(1_000_000))).toBeNull()
  })
})

describe("countdown reward (TinyZero rule)", () => {
  it("1 for a correct equation, 0.1 for a wrong or invalid one, 0 for no answer", async () => {
    expect(
      await score([
        "<think>25-7=18, 18*3=54</think>\n<answer>(25 - 7) * 3</answer>",
        "<answer>3 * (25 - 7)</answer>",
        "<answer>25 + 7 * 3</answer>", // 46: misses the target
        "<answer>(25 - 7) * 3 + 0</answer>", // an extra number
        "<answer>(25 - 7) * 3 * 3</answer>", // a number used twice
        "<answer>25 * 3 - 7 * 3</answer>", // numbers other than the multiset
        "<answer>2**10</answer>",
        "<answer>process.exit()</answer>",
        "<answer>(25 - 7) * 3.0</answer>", // a character outside the set
        "<answer>(25 - 7) * 3 = 54</answer>",
        "<answer>(25 - 7 * 3</answer>", // does not parse
        "(25 - 7) * 3", // no tags
        "<answer></answer>",
        ""
      ])
    ).toEqual([1, 1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0, 0.1, 0].map(Math.fround))
  })

  it("takes the last complete answer block; nested and repeated tags", async () => {
    expect(
      await score([
        "<answer>1+2</answer> no wait <answer>(25 - 7) * 3</answer>",
        "<answer>(25 - 7) * 3</answer> no wait <answer>1+2</answer>",
        "<answer><answer>(25 - 7) * 3</answer></answer>",
        "<answer>(25 - 7) * 3</answer><answer>",
        "the answer is (25 - 7) * 3 </answer>"
      ])
    ).toEqual([1, 0.1, 1, 1, 0].map(Math.fround))
  })

  it("division uses exact floats within 1e-5, and division by zero is 0.1", async () => {
    expect(await score(["<answer>(6 / 4) * 2</answer>", "<answer>6 / (4 - 4)</answer>"], { numbers: [6, 4, 2], target: 3 })).toEqual([1, 0.1].map(Math.fround))
    expect(await score(["<answer>6 / (4 - 4)</answer>"], { numbers: [6, 4, 4], target: 3 })).toEqual([Math.fround(0.1)])
  })

  it("NaN when the row is not a countdown task", async () => {
    expect(await score(["<answer>1+2</answer>"], null)).toEqual([NaN])
    expect(await score(["<answer>1+2</answer>"], { numbers: "1,2", target: 3 })).toEqual([NaN])
  })

  it("1e6-character outputs", async () => {
    const long = "x".repeat(1e6) + "<answer>(25 - 7) * 3</answer>"
    const deep = "<answer>" + "(".repeat(400_000) + "25 - 7" + ")".repeat(400_000) + " * 3</answer>"
    const spam = "<answer>1</answer>".repeat(60_000)
    expect(await score([long, deep, spam])).toEqual([1, 1, 0.1].map(Math.fround))
  })

  it("passes the conformance suite", async () => {
    for (const r of await Conformance.run(plugin)) expect(r.ok, `${r.check}: ${r.detail}`).toBe(true)
  })

  it("loads through the plugin registry", async () => {
    const loaded = await Effect.runPromise(Plugin.load(fileURLToPath(new URL("../src/index.ts", import.meta.url)), { kind: "reward" }))
    expect(loaded.name).toBe("countdown")
  })
})
