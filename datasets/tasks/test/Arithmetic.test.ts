import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import { Arithmetic, Corpus, Task } from "../src/index.js"

const run = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(effect)

describe("Arithmetic.generate", () => {
  it("is deterministic in the seed, byte for byte", async () => {
    const options = { seed: 7, split: "train", count: 500, digits: [1, 4], ops: ["+", "-", "*"] } as const
    const a = await run(Arithmetic.generate(options))
    const b = await run(Arithmetic.generate(options))
    expect(JSON.stringify(b)).toBe(JSON.stringify(a))
    const c = await run(Arithmetic.generate({ ...options, seed: 8 }))
    expect(JSON.stringify(c)).not.toBe(JSON.stringify(a))
    const batchA = Task.toBatch(a), batchB = Task.toBatch(b)
    for (const col of ["id", "prompt", "answer", "metadata"] as const) {
      expect(batchB.getChild(col)!.data[0].values).toEqual(batchA.getChild(col)!.data[0].values)
    }
  })

  it("keeps train and held-out disjoint on large samples, across seeds", async () => {
    const opts = { count: 20_000, digits: [1, 3], ops: ["+", "-", "*"] } as const
    const train = await run(Arithmetic.generate({ ...opts, seed: 1, split: "train" }))
    const test = await run(Arithmetic.generate({ ...opts, count: 3_000, seed: 2, split: "test" }))
    const trainIds = new Set(train.map((r) => r.id))
    expect(trainIds.size).toBe(train.length)
    expect(new Set(test.map((r) => r.id)).size).toBe(test.length)
    expect(test.filter((r) => trainIds.has(r.id))).toEqual([])
    // Commuted forms are the same problem: "3 + 45" in train means "45 + 3" is never held out.
    for (const r of test) {
      const m = r.metadata as { a: number; b: number; op: Arithmetic.Op }
      if (m.op !== "-") expect(Task.splitOf(Arithmetic.canonical({ a: m.b, b: m.a, op: m.op }))).toBe("test")
    }
  })

  it("writes rows with the exact answer, the question and the metadata", async () => {
    const rows = await run(Arithmetic.generate({ seed: 3, split: "test", count: 2000, digits: [2, 3], ops: ["+", "-", "*"] }))
    for (const r of rows) {
      const m = r.metadata as { a: number; b: number; op: Arithmetic.Op; digits: number }
      expect(r.question).toBe(`What is ${m.a} ${m.op} ${m.b}?`)
      const expected = m.op === "+" ? m.a + m.b : m.op === "-" ? m.a - m.b : m.a * m.b
      expect(r.answer).toBe(String(expected))
      expect(Number(r.answer)).toBeGreaterThanOrEqual(0)
      expect(Math.max(String(m.a).length, String(m.b).length)).toBe(m.digits)
      expect(m.digits).toBeGreaterThanOrEqual(2)
      expect(m.digits).toBeLessThanOrEqual(3)
    }
    expect(new Set(rows.map((r) => (r.metadata as { op: string }).op))).toEqual(new Set(["+", "-", "*"]))
  })

  it("has carries and borrows, and the worked solutions get them right", async () => {
    const rows = await run(Arithmetic.generate({ seed: 5, split: "train", count: 3000, digits: [2, 3], ops: ["+", "-", "*"] }))
    let carries = 0, borrows = 0, adds = 0, subs = 0
    for (const r of rows) {
      const m = r.metadata as { a: number; b: number; op: Arithmetic.Op }
      const w = Arithmetic.work(m)
      expect(w.result).toBe(Number(r.answer))
      // Independent of the worker: column i carries (borrows) iff the operands' low i+1 digits overflow (underflow).
      const low = (n: number, i: number) => n % 10 ** (i + 1)
      const columns = [...String(Math.max(m.a, m.b))].map((_, i) => i)
      if (m.op === "+") {
        adds++
        const hasCarry = columns.some((i) => low(m.a, i) + low(m.b, i) >= 10 ** (i + 1))
        expect(w.think.includes(" c1")).toBe(hasCarry)
        if (hasCarry) carries++
      }
      if (m.op === "-") {
        subs++
        const hasBorrow = columns.some((i) => low(m.a, i) < low(m.b, i))
        expect(w.think.includes(" b1")).toBe(hasBorrow)
        if (hasBorrow) borrows++
      }
    }
    expect(carries / adds).toBeGreaterThan(0.5)
    expect(borrows / subs).toBeGreaterThan(0.4)
  })

  it("worked examples read as the hand method", () => {
    expect(Arithmetic.solution({ a: 47, b: 85, op: "+" })).toBe("<think>47+85: 7+5=12 c1, 4+8+1=13 c1 -> 132</think><answer>132</answer>")
    expect(Arithmetic.solution({ a: 402, b: 57, op: "-" })).toBe("<think>402-57: 12-7=5 b1, 10-5-1=4 b1, 4-1=3 -> 345</think><answer>345</answer>")
    expect(Arithmetic.solution({ a: 100, b: 99, op: "-" })).toBe("<think>100-99: 10-9=1 b1, 10-9-1=0 b1, 1-1=0 -> 1</think><answer>1</answer>")
    expect(Arithmetic.solution({ a: 47, b: 85, op: "*" })).toBe("<think>47*85: 47*5=235, 47*80=3760, 235+3760=3995 -> 3995</think><answer>3995</answer>")
    expect(Arithmetic.solution({ a: 3, b: 456, op: "*" })).toBe("<think>3*456: 456*3=1368 -> 1368</think><answer>1368</answer>")
    expect(Arithmetic.solution({ a: 1234, b: 5, op: "+" })).toBe("<think>1234+5: 4+5=9 -> 1239</think><answer>1239</answer>")
  })

  it("fails with a tagged error on bad options or an exhausted space", async () => {
    const bad = await run(Effect.flip(Arithmetic.generate({ seed: 1, split: "train", count: 5, digits: [3, 2] })))
    expect(bad._tag).toBe("InvalidOptions")
    expect(bad.message).toContain("digits")
    // One-digit sums: 45 distinct problems in all, so 100 distinct train problems cannot exist.
    const out = await run(Effect.flip(Arithmetic.generate({ seed: 1, split: "train", count: 100, digits: [1, 1], ops: ["+"] })))
    expect(out._tag).toBe("Exhausted")
  })
})

describe("Arithmetic.corpus", () => {
  it("has the configured share of flawed solutions, every one graded truthfully", async () => {
    const rows = await run(Arithmetic.corpus({ seed: 11, count: 4000, digits: [2, 3], ops: ["+", "-", "*"], wrongFraction: 0.35 }))
    expect(rows.length).toBe(4000)
    const flawed = rows.filter((r) => !r.correct).length
    expect(flawed / rows.length).toBeCloseTo(0.35, 2)
    const kinds = new Map<string, number>()
    for (const r of rows) kinds.set(r.flaw, (kinds.get(r.flaw) ?? 0) + 1)
    for (const k of ["dropped_carry", "off_by_one", "truncated", "untagged"]) expect(kinds.get(k) ?? 0).toBeGreaterThan(100)
    for (const r of rows) {
      const [, a, op, b] = /^What is (\d+) ([-+*]) (\d+)\?$/.exec(r.prompt)!
      const truth = Arithmetic.evaluate({ a: Number(a), b: Number(b), op: op as Arithmetic.Op })
      expect(r.correct).toBe(r.flaw === "none")
      if (Corpus.UNFINISHED.includes(r.flaw)) {
        expect(r.completion).not.toMatch(Corpus.TAG_FORM)
        continue
      }
      expect(r.completion).toMatch(Corpus.TAG_FORM)
      const answer = /<answer>(.*)<\/answer>/.exec(r.completion)![1]
      expect(Number(answer) === truth).toBe(r.correct)
      // Wrong solutions are consistent with their own (flawed) working.
      expect(r.completion).toContain(`-> ${answer}</think>`)
    }
  })

  it("keeps completions short and never uses held-out problems", async () => {
    const rows = await run(Arithmetic.corpus({ seed: 2, count: 3000, digits: [2, 3], ops: ["+", "-"] }))
    const longest = Math.max(...rows.map((r) => r.completion.length))
    // 3-digit ± 3-digit: at most 90 characters, 32 of them the four tags and 8 the restated problem.
    expect(longest).toBeLessThanOrEqual(90)
    const held = await run(Arithmetic.generate({ seed: 2, split: "test", count: 2000, digits: [2, 3], ops: ["+", "-"] }))
    const heldQuestions = new Set(held.map((r) => r.question))
    expect(rows.filter((r) => heldQuestions.has(r.prompt))).toEqual([])
    expect(rows.filter((r) => Task.splitOf(Arithmetic.canonical(parse(r.prompt))) !== "train")).toEqual([])
    const rowsDefault = await run(Arithmetic.corpus({ seed: 2, count: 3000, digits: [2, 3], ops: ["+", "-"] }))
    expect(rowsDefault.filter((r) => !r.correct).length).toBe(Math.round(3000 * Corpus.DEFAULT_WRONG_FRACTION))
  })

  it("builds a corpus record batch", async () => {
    const rows = await run(Arithmetic.corpus({ seed: 4, count: 50 }))
    const batch = Corpus.toBatch(rows)
    expect(batch.schema.metadata.get("r1flow.schema")).toBe("corpus")
    expect(batch.numRows).toBe(50)
    rows.forEach((r, i) => {
      expect(batch.get(i)!.toJSON()).toEqual({ prompt: r.prompt, completion: r.completion, correct: r.correct, flaw: r.flaw })
    })
  })
})

const parse = (prompt: string) => {
  const [, a, op, b] = /^What is (\d+) ([-+*]) (\d+)\?$/.exec(prompt)!
  return { a: Number(a), b: Number(b), op: op as Arithmetic.Op }
}
