import { Conformance, Plugin, type Reward } from "@r1flow/core"
import { Effect } from "effect"
import { beforeAll, describe, expect, it } from "vitest"
import { Arithmetic, ColdStart, Countdown, type Task } from "../src/index.js"

const run = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(effect)

/** A reward plugin as the engine loads it (by package name), configured. */
const reward = (spec: string, config: unknown = {}) =>
  run(Effect.flatMap(Plugin.load(spec, { kind: "reward" }), (p) => Plugin.instantiate(p as Reward.RewardPlugin, config, spec)))

let format: Reward.Reward, accuracy: Reward.Reward, countdown: Reward.Reward
let arithmeticRows: Array<Task.Row>, countdownRows: Array<Task.Row>

beforeAll(async () => {
  format = await reward("@r1flow/reward-format", { mode: "strict" })
  accuracy = await reward("@r1flow/reward-math-accuracy")
  countdown = await reward("@r1flow/reward-countdown")
  arithmeticRows = [
    ...(await run(Arithmetic.generate({ seed: 5, split: "train", count: 300, digits: [1, 4] }))),
    // the r1 recipe's task
    ...(await run(Arithmetic.generate({ seed: 6, split: "train", count: 100, digits: [1, 2], ops: ["+", "-"] })))
  ]
  countdownRows = [
    ...(await run(Countdown.generate({ seed: 5, split: "train", count: 200, numbers: 3 }))),
    ...(await run(Countdown.generate({ seed: 5, split: "train", count: 200, numbers: 4 })))
  ]
})

const chainOf = (row: Task.Row, seed = 1) => {
  const c = ColdStart.chain(row, seed)
  if (c === undefined) throw new Error(`no chain for ${row.id}`)
  return c
}

const scores = async (r: Reward.Reward, rows: ReadonlyArray<Task.Row>, completionPrefix: string) =>
  Array.from(await r.score(Conformance.makeInput(
    rows.map((row) => ({ prompt: row.question, completion: ColdStart.completion(chainOf(row), completionPrefix), answer: row.answer, metadata: row.metadata })),
    { completionPrefix }
  )))

/** Every equation chain the text states (`x op y = z`, `a = b = c`), split at `=`. */
const SIDE = String.raw`[\d(](?:[\d()+\-*/ ]*[\d)])?`
const EQUATION = new RegExp(String.raw`[\d(][\d()+\-*/ ]*[-+*/][\d()+\-*/ ]*[\d)](?: = ${SIDE})+`, "g")
const equations = (text: string): Array<Array<string>> => (text.match(EQUATION) ?? []).map((e) => e.split(" = "))

/** Whether `from op x = y` steps lead from `from` to `to` (the inverse check's trail). */
const trail = (text: string, from: number, op: "+" | "-", to: number): boolean => {
  const steps = new Map<number, number>()
  for (const m of text.matchAll(new RegExp(`(\\d+) \\${op} (\\d+) = (\\d+)`, "g"))) steps.set(Number(m[1]), Number(m[3]))
  let at = from
  for (let guard = 0; guard < 20 && at !== to; guard++) {
    const next = steps.get(at)
    if (next === undefined) return false
    at = next
  }
  return at === to
}

describe("ColdStart.chain", () => {
  it("scores 1 on strict format and on accuracy for every row, under either completion prefix", async () => {
    for (const prefix of ["", "<think>"]) {
      expect(new Set(await scores(format, arithmeticRows, prefix))).toEqual(new Set([1]))
      expect(new Set(await scores(accuracy, arithmeticRows, prefix))).toEqual(new Set([1]))
      expect(new Set(await scores(format, countdownRows, prefix))).toEqual(new Set([1]))
      expect(new Set(await scores(countdown, countdownRows, prefix))).toEqual(new Set([1]))
    }
    expect(ColdStart.completion(chainOf(arithmeticRows[0]), "<think>").startsWith("<think>")).toBe(false)
  })

  it("states only true equations, by an independent evaluator", () => {
    let checked = 0
    for (const row of [...arithmeticRows, ...countdownRows]) {
      for (const chain of equations(chainOf(row).reasoning)) {
        const values = chain.map((side) => Countdown.evaluate(side)?.value)
        expect(values.every((v) => v !== undefined && v === values[0]), `${row.id}: ${chain.join(" = ")}`).toBe(true)
        checked++
      }
    }
    expect(checked).toBeGreaterThan(5000)
  })

  it("reflects, then verifies arithmetic by the inverse operation", () => {
    for (const row of arithmeticRows) {
      const { a, b, op } = row.metadata as { a: number; b: number; op: Arithmetic.Op }
      const r = Arithmetic.evaluate({ a, b, op })
      const text = chainOf(row).reasoning
      expect(text, row.id).toMatch(/double-check|verify|make sure|is that right/i)
      const verified = op === "+" ? trail(text, r, "-", a) : op === "-" ? trail(text, r, "+", a) : trail(text, r, "-", 0) && text.includes(`${r} / `)
      expect(verified, `${row.id}\n${text}`).toBe(true)
      // the verification comes after the result is first stated
      expect(text.indexOf(`So ${a} ${op} ${b} = ${r}.`)).toBeGreaterThan(0)
      expect(text.indexOf(`So ${a} ${op} ${b} = ${r}.`)).toBeLessThan(text.search(/double-check|verify|make sure|is that right/i))
    }
  })

  it("searches countdown with dead ends, then re-evaluates the equation and checks each number is used once", () => {
    let deadEnds = 0, mistakes = 0
    for (const row of countdownRows) {
      const { numbers, target } = row.metadata as { numbers: Array<number>; target: number }
      const c = chainOf(row)
      const text = c.reasoning
      expect(Countdown.check(c.answer, numbers, target), row.id).toBe(true)
      expect(text).toContain(`Evaluating innermost first: ${c.answer} = `)
      expect(text).toMatch(new RegExp(`= ${target}\\. [^\\n]*\\nIt uses [^\\n]*each one is used exactly once`))
      if (text.includes(`, not ${target}:`)) deadEnds++
      if (/uses \d+ twice|leaves out \d+/.test(text)) mistakes++
    }
    expect(deadEnds / countdownRows.length).toBeGreaterThan(0.7)
    expect(mistakes).toBeGreaterThan(20)
  })

  it("varies its phrasing: many distinct line shapes and almost no two chains alike", () => {
    const rows = [...arithmeticRows, ...countdownRows]
    const shape = (s: string) => s.replace(/\d+/g, "#")
    const lines = new Set(rows.flatMap((r) => chainOf(r).reasoning.split("\n").map(shape)))
    const chains = new Set(rows.map((r) => shape(chainOf(r).reasoning)))
    expect(lines.size).toBeGreaterThan(150)
    expect(chains.size / rows.length).toBeGreaterThan(0.8)
    const openings = new Set(rows.map((r) => shape(chainOf(r).reasoning.split("\n")[1]).replace(/# [-+*] #/, "Q")))
    expect(openings.size).toBeGreaterThanOrEqual(7)
    // some chains slip on a carry or borrow and catch it
    expect(arithmeticRows.filter((r) => /Wait, (I left out the carry|this column lent)|wait, plus the carry/.test(chainOf(r).reasoning)).length).toBeGreaterThan(20)
  })

  it("is deterministic in the seed and the row, whatever other rows are in the set", () => {
    const rows = arithmeticRows.slice(0, 50).concat(countdownRows.slice(0, 50))
    const a = ColdStart.build(rows, { seed: 3 })
    expect(ColdStart.build(rows, { seed: 3 })).toEqual(a)
    const shuffled = ColdStart.build([...rows].reverse(), { seed: 3 })
    expect(new Map(shuffled.examples.map((e) => [e.id, e.completion]))).toEqual(new Map(a.examples.map((e) => [e.id, e.completion])))
    const other = ColdStart.build(rows, { seed: 4 })
    expect(other.examples.filter((e, i) => e.completion !== a.examples[i].completion).length).toBeGreaterThan(50)
  })
})

describe("hand-checked chains", () => {
  const arithmeticRow = (a: number, b: number, op: Arithmetic.Op) => Arithmetic.toRow({ a, b, op, digits: 2 })

  it("47 + 85: 7 + 5 = 12 carry 1, 4 + 8 + 1 = 13 carry 1, so 132; checked as 132 - 80 = 52, 52 - 5 = 47", () => {
    for (const seed of [1, 2, 3]) {
      const c = chainOf(arithmeticRow(47, 85, "+"), seed)
      expect(c.answer).toBe("132")
      for (const s of ["7 + 5 = 12", "4 + 8 + 1 = 13", "The last carry, 1, becomes the hundreds digit", "132 - 80 = 52", "52 - 5 = 47"]) expect(c.reasoning).toContain(s)
    }
  })

  it("402 - 57: 12 - 7 = 5, 10 - 5 - 1 = 4, 4 - 1 = 3, so 345; checked as 345 + 50 = 395, 395 + 7 = 402", () => {
    const c = chainOf(arithmeticRow(402, 57, "-"))
    expect(c.answer).toBe("345")
    for (const s of ["12 - 7 = 5", "10 - 5 - 1 = 4", "4 - 1 = 3", "345 + 50 = 395", "395 + 7 = 402"]) expect(c.reasoning).toContain(s)
  })

  it("47 * 85: 47 * 5 = 235, 47 * 80 = 3760, 235 + 3760 = 3995; divided back 3995 - 3760 = 235, 235 - 235 = 0", () => {
    const c = chainOf(arithmeticRow(47, 85, "*"))
    expect(c.answer).toBe("3995")
    for (const s of ["7 * 5 = 35", "4 * 5 + 3 = 23", "47 * 5 = 235", "47 * 80 = 3760", "235 + 3760 = 3995", "3995 - 3760 = 235", "235 - 235 = 0", "80 + 5 = 85"]) {
      expect(c.reasoning).toContain(s)
    }
  })

  it("[3, 7, 25] → 46: the only solution is 25 + 7 * 3, verified as 25 + 21 = 46", () => {
    for (const seed of [1, 2, 3]) {
      const c = chainOf(Countdown.toRow({ numbers: [3, 7, 25], target: 46 }), seed)
      expect(c.answer).toBe("25 + 7 * 3")
      expect(c.reasoning).toContain("7 * 3 = 21, then 25 + 21 = 46")
      expect(c.reasoning).toContain("25 + 7 * 3 = 25 + 21 = 46")
      expect(c.reasoning).toContain("It uses 25, 7 and 3, and the given numbers are 3, 7 and 25, so each one is used exactly once.")
    }
  })
})

describe("chains in the corpus's notation (work: corpus)", () => {
  const corpusChain = (row: Task.Row, seed = 1) => {
    const c = ColdStart.chain(row, seed, "corpus")
    if (c === undefined) throw new Error(`no chain for ${row.id}`)
    return c
  }
  const completions = (rows: ReadonlyArray<Task.Row>) =>
    Conformance.makeInput(rows.map((row) => ({ prompt: row.question, completion: ColdStart.completion(corpusChain(row)), answer: row.answer, metadata: row.metadata })), { completionPrefix: "" })

  it("scores 1 on strict format and on accuracy for every row", async () => {
    expect(new Set(await format.score(completions(arithmeticRows)))).toEqual(new Set([1]))
    expect(new Set(await accuracy.score(completions(arithmeticRows)))).toEqual(new Set([1]))
    expect(new Set(await format.score(completions(countdownRows)))).toEqual(new Set([1]))
    expect(new Set(await countdown.score(completions(countdownRows)))).toEqual(new Set([1]))
  })

  it("works arithmetic exactly as the corpus does, checks it by the inverse worked the same way, then reflects and sums up", () => {
    for (const row of arithmeticRows) {
      const { a, b, op } = row.metadata as { a: number; b: number; op: Arithmetic.Op }
      const text = corpusChain(row).reasoning
      const r = Arithmetic.evaluate({ a, b, op })
      expect(text, row.id).toContain(`\n${Arithmetic.work({ a, b, op }).think}.\n`)
      if (op !== "*") expect(text, row.id).toContain(Arithmetic.work({ a: r, b, op: op === "+" ? "-" : "+" }).think)
      expect(text, row.id).toMatch(/double-check|verify|make sure|is that right/i)
      expect(text.indexOf(`So ${a} ${op} ${b} = ${r}.`), row.id).toBeGreaterThan(0)
    }
  })

  it("47 + 85 and 80 - 6, by hand", () => {
    const add = corpusChain(Arithmetic.toRow({ a: 47, b: 85, op: "+", digits: 2 })).reasoning
    expect(add).toContain("\n47+85: 7+5=12 c1, 4+8+1=13 c1 -> 132.\n")
    expect(add).toContain("132-85: 12-5=7 b1, 13-8-1=4 b1, 1-1=0 -> 47")
    const sub = corpusChain(Arithmetic.toRow({ a: 80, b: 6, op: "-", digits: 2 })).reasoning
    expect(sub).toContain("\n80-6: 10-6=4 b1, 8-1=7 -> 74.\n")
    expect(sub).toContain("74+6: 4+6=10 c1, 7+1=8 -> 80")
  })

  it("writes countdown's steps as the corpus does (7*3=21), the same search and checks as the prose chain otherwise", () => {
    for (const row of countdownRows.slice(0, 100)) {
      const prose = chainOf(row), corpus = corpusChain(row)
      expect(corpus.reasoning.split("\n").length, row.id).toBe(prose.reasoning.split("\n").length)
      expect(corpus.reasoning, row.id).not.toMatch(/\d [-+*/=] \d/)
      expect(corpus.answer, row.id).toBe(prose.answer.replaceAll(" ", ""))
    }
    const c = corpusChain(Countdown.toRow({ numbers: [3, 7, 25], target: 46 }))
    expect(c.reasoning).toContain("7*3=21, then 25+21=46")
    expect(c.reasoning).toContain("Evaluating innermost first: 25+7*3=25+21=46.")
  })

  it("leaves the prose chains as they were (the default)", () => {
    for (const row of [...arithmeticRows.slice(0, 50), ...countdownRows.slice(0, 50)]) expect(ColdStart.chain(row, 1, "prose")).toEqual(chainOf(row))
    expect(ColdStart.build(arithmeticRows.slice(0, 5), { seed: 1, work: "corpus" }).examples.map((e) => e.completion))
      .toEqual(arithmeticRows.slice(0, 5).map((r) => ColdStart.completion(corpusChain(r))))
  })
})

describe("rows without a generator", () => {
  const gsm8k: Task.Row = { id: "gsm8k/1", question: "Natalia sold clips to 48 friends…", answer: "72", metadata: { task: "gsm8k" } }
  const jsonl: Task.Row = { id: "jsonl/1", question: "Name a prime.", answer: "7", metadata: { task: "mine", numbers: "1,2" } }

  it("have no chain, and the set counts them per task with the reason", () => {
    expect(ColdStart.chain(gsm8k, 1)).toBeUndefined()
    expect(ColdStart.chain(jsonl, 1)).toBeUndefined()
    expect(ColdStart.generatorOf({ task: "sums", a: 2, b: 3, op: "+" })).toBe("arithmetic")
    expect(ColdStart.generatorOf({ task: "game", numbers: [1, 2, 3], target: 6 })).toBe("countdown")
    const set = ColdStart.build([gsm8k, arithmeticRows[0], gsm8k, jsonl, countdownRows[0]], { seed: 1 })
    expect(set.examples.map((e) => [e.id, e.generator])).toEqual([[arithmeticRows[0].id, "arithmetic"], [countdownRows[0].id, "countdown"]])
    expect(set.skipped.map((s) => [s.task, s.count])).toEqual([["gsm8k", 2], ["mine", 1]])
    expect(set.skipped[0].reason).toContain("no cold-start generator")
  })

  it("skips generated-looking rows it cannot stand behind: a reference that disagrees, an unsolvable countdown", () => {
    const wrong = { ...arithmeticRows[0], answer: "-1" }
    const unsolvable: Task.Row = { id: "countdown/x", question: "?", answer: "1000", metadata: { numbers: [1, 2, 3], target: 1000 } }
    const set = ColdStart.build([wrong, unsolvable], { seed: 1 })
    expect(set.examples).toEqual([])
    expect(set.skipped.map((s) => s.reason)).toEqual(["the reference answer disagrees with the metadata", "countdown instance with no solution in positive-integer steps"])
  })

  it("stops at limit", () => {
    expect(ColdStart.build(arithmeticRows, { seed: 1, limit: 7 }).examples.length).toBe(7)
  })
})
