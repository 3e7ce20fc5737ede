import { describe, expect, it } from "vitest"
import * as Evaluate from "../src/Evaluate.js"

const math = Evaluate.voteKey("arithmetic")
const countdown = Evaluate.voteKey("countdown")

describe("cons@k votes on answers equal by the task's own equivalence", () => {
  it("`42`, `42.0` and `<answer>42</answer>` are one answer, which outvotes a twice-given 41", () => {
    const completions = ["<answer>41</answer>", "42", "<answer>41</answer>", "42.0", "<think>6*7</think><answer>42</answer>"]
    const judged = [false, false, false, false, true] // the accuracy reward reads only the tagged 42
    expect(Evaluate.consensus(completions, judged, math)).toBe(true)
  })

  it("completions without an answer do not vote, however many agree", () => {
    expect(Evaluate.consensus(["no idea", "no idea", "no idea", "<answer>7</answer>"], [false, false, false, true], math)).toBe(true)
    expect(Evaluate.consensus(["<answer>7", "so 7", "so 7"], [false, false, false], math)).toBe(false)
    expect(Evaluate.consensus(["<answer></answer>", "<answer> </answer>", "<answer>8</answer>"], [false, false, false], math)).toBe(false)
  })

  it("math keys follow MathAnswer's equivalence: separators, fractions, LaTeX, text case", () => {
    const same = (a: string, b: string) => expect(math(a), `${a} vs ${b}`).toBe(math(b))
    same("<answer>$1,000</answer>", "<answer>1000</answer>")
    same("\\boxed{\\frac{3}{4}}", "<answer>0.75</answer>")
    same("work\n#### 18 dollars", "<answer>18</answer>")
    same("<answer>Yes</answer>", "<answer>yes</answer>")
    expect(math("<answer>41</answer>")).not.toBe(math("<answer>42</answer>"))
    expect(math("the answer is 42")).toBeNull()
  })

  it("countdown equations vote by the numbers they use and the value they reach", () => {
    expect(countdown("<answer>(1 + 2) * 3</answer>")).toBe(countdown("<answer>3*(2+1)</answer>"))
    expect(countdown("<answer>1+2+3</answer>")).not.toBe(countdown("<answer>(1+2)*3</answer>"))
    expect(countdown("<answer>2*3+3</answer>")).not.toBe(countdown("<answer>(1+2)*3</answer>"))
    expect(countdown("<answer>3 +</answer>")).toBeNull()
    expect(countdown("9")).toBeNull()
  })
})
