import { Effect, Option } from "effect"
import { describe, expect, it } from "vitest"
import { Corpus, Countdown, Task } from "../src/index.js"

const run = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(effect)

interface Meta { numbers: Array<number>; target: number }

describe("Countdown.generate", () => {
  it("is deterministic in the seed", async () => {
    const options = { seed: 21, split: "train", count: 300, numbers: 4 } as const
    const a = await run(Countdown.generate(options))
    expect(JSON.stringify(await run(Countdown.generate(options)))).toBe(JSON.stringify(a))
    expect(JSON.stringify(await run(Countdown.generate({ ...options, seed: 22 })))).not.toBe(JSON.stringify(a))
  })

  it("only makes solvable instances, and the solver's expressions check out", async () => {
    for (const numbers of [3, 4] as const) {
      const rows = await run(Countdown.generate({ seed: 1, split: "test", count: 400, numbers, maxTarget: 100 }))
      for (const r of rows) {
        const m = r.metadata as unknown as Meta
        expect(m.numbers.length).toBe(numbers)
        expect(m.target).toBeGreaterThanOrEqual(1)
        expect(m.target).toBeLessThanOrEqual(100)
        expect(r.answer).toBe(String(m.target))
        expect(r.question).toBe(`Using the numbers [${m.numbers.join(", ")}], create an equation that equals ${m.target}. You can use + - * / and each number once.`)
        const expr = Option.getOrThrow(Countdown.solve(m.numbers, m.target))
        expect(Countdown.check(expr, m.numbers, m.target)).toBe(true)
        expect(Countdown.evaluate(expr)!.numbers.length).toBe(numbers)
      }
    }
  })

  it("keeps train and held-out disjoint on large samples", async () => {
    const train = await run(Countdown.generate({ seed: 3, split: "train", count: 5000, numbers: 3, maxNumber: 20, maxTarget: 50 }))
    const test = await run(Countdown.generate({ seed: 4, split: "test", count: 800, numbers: 3, maxNumber: 20, maxTarget: 50 }))
    const trainKeys = new Set(train.map((r) => Countdown.canonical(r.metadata as unknown as Meta)))
    expect(trainKeys.size).toBe(train.length)
    const overlap = test.filter((r) => trainKeys.has(Countdown.canonical(r.metadata as unknown as Meta)))
    expect(overlap).toEqual([])
    // Permuted numbers are the same problem.
    expect(Countdown.canonical({ numbers: [7, 3, 25], target: 46 })).toBe(Countdown.canonical({ numbers: [25, 7, 3], target: 46 }))
  })

  it("knows unsolvable instances and checks answers the way TinyZero does", () => {
    expect(Option.isNone(Countdown.solve([1, 1, 1], 50))).toBe(true)
    expect(Option.getOrThrow(Countdown.solve([3, 7, 25], 46))).toSatisfy((e: string) => Countdown.check(e, [3, 7, 25], 46))
    expect(Countdown.check("25+7*3", [3, 7, 25], 46)).toBe(true)
    expect(Countdown.check("(25+7)*3", [3, 7, 25], 46)).toBe(false) // wrong value
    expect(Countdown.check("25+21", [3, 7, 25], 46)).toBe(false) // wrong numbers
    expect(Countdown.check("25+7*3+3", [3, 7, 25], 49)).toBe(false) // 3 used twice
    expect(Countdown.check("25+7*", [3, 7, 25], 46)).toBe(false) // does not parse
    expect(Countdown.evaluate("100-(6/(3-1))")).toEqual({ value: 97, numbers: [100, 6, 3, 1] })
  })

  it("fails with a tagged error on bad options", async () => {
    const e = await run(Effect.flip(Countdown.generate({ seed: 1, split: "train", count: 5, numbers: 5 as 4 })))
    expect(e._tag).toBe("InvalidOptions")
    // Three numbers in 1..2 reach few targets: the space runs out.
    const x = await run(Effect.flip(Countdown.generate({ seed: 1, split: "test", count: 50, numbers: 3, maxNumber: 2 })))
    expect(x._tag).toBe("Exhausted")
  })
})

describe("Countdown.corpus", () => {
  it("has the configured share of flawed solutions, each graded truthfully", async () => {
    const rows = await run(Countdown.corpus({ seed: 9, count: 1500, numbers: 4, wrongFraction: 0.4 }))
    expect(rows.filter((r) => !r.correct).length).toBe(600)
    const kinds = new Map<string, number>()
    for (const r of rows) kinds.set(r.flaw, (kinds.get(r.flaw) ?? 0) + 1)
    for (const k of ["near_miss", "false_step", "truncated", "untagged"]) expect(kinds.get(k) ?? 0).toBeGreaterThan(50)
    // Leaving a number out reaches the target in only about one instance in ten.
    expect(kinds.get("missing_number") ?? 0).toBeGreaterThan(5)
    for (const r of rows) {
      const [, nums, target] = /^Using the numbers \[([\d, ]+)\], create an equation that equals (\d+)\./.exec(r.prompt)!
      const numbers = nums.split(", ").map(Number)
      expect(Task.splitOf(Countdown.canonical({ numbers, target: Number(target) }))).toBe("train")
      expect(r.correct).toBe(r.flaw === "none")
      if (Corpus.UNFINISHED.includes(r.flaw)) {
        expect(r.completion).not.toMatch(Corpus.TAG_FORM)
        continue
      }
      expect(r.completion).toMatch(Corpus.TAG_FORM)
      const answer = /<answer>(.*)<\/answer>/.exec(r.completion)![1]
      expect(Countdown.check(answer, numbers, Number(target))).toBe(r.correct)
      // The think's last step arrives at the answer's value, except in a false step, which claims the target.
      const think = /<think>(.*)<\/think>/.exec(r.completion)![1]
      const claimed = Number(think.split("=").at(-1))
      if (r.flaw === "false_step") {
        expect(claimed).toBe(Number(target))
        expect(Countdown.evaluate(answer)!.value).not.toBe(Number(target))
      } else {
        expect(claimed).toBe(Countdown.evaluate(answer)!.value)
      }
    }
  })
})
