/**
 * Multi-digit arithmetic: `a + b`, `a - b` (a ≥ b, so borrows but no negatives) and `a * b`, with
 * difficulty set by the operands' digit counts. Operands are uniform over their digit count, so
 * carries and borrows occur at their natural rate (about 45 % of columns).
 *
 * Worked solutions go column by column from the ones, the way the problem is solved by hand, and
 * compactly (the base model has a ~128-token context):
 *
 *   47+85   →  7+5=12 c1, 4+8+1=13 c1 -> 132
 *   402-57  →  12-7=5 b1, 10-5-1=4 b1, 4-1=3 -> 345
 *   47*85   →  47*5=235, 47*80=3760, 235+3760=3995 -> 3995
 *
 * (multiplication works through partial products of the operand with fewer digits). A column where
 * one operand has run out and nothing is carried is copied silently.
 */
import { Rng } from "@r1flow/core"
import { Effect } from "effect"
import * as Corpus from "./Corpus.js"
import * as Task from "./Task.js"

/** The operators, written in ASCII in questions and solutions. */
export type Op = "+" | "-" | "*"

/** One problem. `digits` is the larger operand's digit count. */
export interface Problem {
  readonly a: number
  readonly b: number
  readonly op: Op
  readonly digits: number
}

/** What to generate. Each operand's digit count is uniform in `digits`; `op` is uniform over `ops`. */
export interface Options {
  readonly seed: number
  readonly count: number
  /** Inclusive digit-count range of each operand; default `[2, 3]`. */
  readonly digits?: readonly [number, number]
  /** Default `["+", "-", "*"]`. */
  readonly ops?: ReadonlyArray<Op>
}

const DEFAULT_DIGITS: readonly [number, number] = [2, 3]
const DEFAULT_OPS: ReadonlyArray<Op> = ["+", "-", "*"]

/** The exact answer. */
export const evaluate = (p: Pick<Problem, "a" | "b" | "op">): number =>
  p.op === "+" ? p.a + p.b : p.op === "-" ? p.a - p.b : p.a * p.b

/** The problem's identity for the split: `a+b` and `b+a` (likewise `*`) are one problem. */
export const canonical = (p: Pick<Problem, "a" | "b" | "op">): string =>
  p.op === "-" ? `${p.a}-${p.b}` : `${Math.min(p.a, p.b)}${p.op}${Math.max(p.a, p.b)}`

/** The R1-Zero question, e.g. "What is 47 + 85?". */
export const question = (p: Pick<Problem, "a" | "b" | "op">): string => `What is ${p.a} ${p.op} ${p.b}?`

/** The task row for a problem. */
export const toRow = (p: Problem): Task.Row => ({
  id: `arithmetic/${canonical(p)}`,
  question: question(p),
  answer: String(evaluate(p)),
  metadata: { a: p.a, b: p.b, op: p.op, digits: p.digits }
})

const validate = (options: Options): Task.InvalidOptions | undefined => {
  const [lo, hi] = options.digits ?? DEFAULT_DIGITS
  const ops = options.ops ?? DEFAULT_OPS
  const bad = (message: string) => new Task.InvalidOptions({ task: "arithmetic", message })
  if (!Number.isInteger(options.count) || options.count < 0) return bad(`count must be a non-negative integer, got ${options.count}`)
  if (!Number.isInteger(lo) || !Number.isInteger(hi) || lo < 1 || hi < lo || hi > 7) {
    return bad(`digits must be [min, max] with 1 ≤ min ≤ max ≤ 7 (answers stay exact), got [${lo}, ${hi}]`)
  }
  if (ops.length === 0 || ops.some((o) => !DEFAULT_OPS.includes(o))) return bad(`ops must be a non-empty subset of + - *, got [${ops.join(", ")}]`)
  return undefined
}

const drawer = (rng: Rng.Stream, options: Options) => {
  const [lo, hi] = options.digits ?? DEFAULT_DIGITS
  const ops = options.ops ?? DEFAULT_OPS
  const operand = () => {
    const d = lo + rng.nextInt(hi - lo + 1)
    const min = d === 1 ? 1 : 10 ** (d - 1)
    return { value: min + rng.nextInt(10 ** d - min), digits: d }
  }
  return (): Problem => {
    const op = ops[rng.nextInt(ops.length)]
    let x = operand()
    let y = operand()
    if (op === "-" && x.value < y.value) [x, y] = [y, x]
    return { a: x.value, b: y.value, op, digits: Math.max(x.digits, y.digits) }
  }
}

const problems = Effect.fnUntraced(function*(options: Options & { readonly split: Task.Split }, stream: string) {
  const invalid = validate(options)
  if (invalid !== undefined) return yield* invalid
  const draw = drawer(Rng.make(options.seed, stream), options)
  return yield* Task.sample({ task: "arithmetic", split: options.split, count: options.count, draw, canonical })
})

/** `count` distinct problems of `split`, the same for the same options. */
export const generate = Effect.fnUntraced(function*(
  options: Options & { readonly split: Task.Split }
): Effect.fn.Return<Array<Task.Row>, Task.InvalidOptions | Task.Exhausted> {
  const ps = yield* problems(options, `arithmetic/${options.split}`)
  return ps.map(toRow)
})

// ---------------------------------------------------------------------------------------------
// Worked solutions

/** A deliberate slip: the `site`-th carry (or borrow) ignored, or the `site`-th step's result off by `delta`. */
export interface Fault {
  readonly kind: "dropped_carry" | "off_by_one"
  readonly site: number
  readonly delta: 1 | -1
}

/** A worked solution: the think text, the result it arrives at, and how many places a fault could go. */
export interface Work {
  readonly think: string
  readonly result: number
  readonly carrySites: number
  readonly stepSites: number
}

const digitsOf = (n: number) => String(n).split("").reverse().map(Number)
const fromDigits = (ds: ReadonlyArray<number>) => Number([...ds].reverse().join(""))
/** `s + delta`, or `s - delta` when that would leave [0, max]: the slip always changes the value. */
const nudge = (s: number, delta: number, max: number) => (s + delta >= 0 && s + delta <= max ? s + delta : s - delta)

const add = (a: number, b: number, fault?: Fault): Work => {
  const A = digitsOf(a), B = digitsOf(b)
  const parts: Array<string> = []
  const out: Array<number> = []
  let carry = 0, carrySites = 0, stepSites = 0
  for (let i = 0; i < Math.max(A.length, B.length); i++) {
    const terms = [A[i], B[i]].filter((d) => d !== undefined)
    let cin = carry
    if (cin > 0) {
      if (fault?.kind === "dropped_carry" && fault.site === carrySites) cin = 0
      carrySites++
    }
    if (terms.length === 1 && cin === 0) {
      out.push(terms[0])
      carry = 0
      continue
    }
    if (cin > 0) terms.push(cin)
    let s = terms.reduce((x, y) => x + y, 0)
    if (fault?.kind === "off_by_one" && fault.site === stepSites) s = nudge(s, fault.delta, 19)
    stepSites++
    out.push(s % 10)
    carry = Math.floor(s / 10)
    parts.push(`${terms.join("+")}=${s}${carry > 0 ? ` c${carry}` : ""}`)
  }
  if (carry > 0) out.push(carry)
  const result = fromDigits(out)
  return { think: `${parts.join(", ")} -> ${result}`, result, carrySites, stepSites }
}

const subtract = (a: number, b: number, fault?: Fault): Work => {
  const A = digitsOf(a), B = digitsOf(b)
  const parts: Array<string> = []
  const out: Array<number> = []
  let borrow = 0, carrySites = 0, stepSites = 0
  for (let i = 0; i < A.length; i++) {
    const x = A[i], y = B[i]
    let bin = borrow
    if (bin > 0) {
      if (fault?.kind === "dropped_carry" && fault.site === carrySites) bin = 0
      carrySites++
    }
    if (y === undefined && bin === 0) {
      out.push(x)
      borrow = 0
      continue
    }
    let t = x - (y ?? 0) - bin
    borrow = t < 0 ? 1 : 0
    t += 10 * borrow
    if (fault?.kind === "off_by_one" && fault.site === stepSites) t = nudge(t, fault.delta, 9)
    stepSites++
    out.push(t)
    const top = borrow > 0 ? `1${x}` : `${x}`
    parts.push(`${top}${y === undefined ? "" : `-${y}`}${bin > 0 ? "-1" : ""}=${t}${borrow > 0 ? " b1" : ""}`)
  }
  const result = fromDigits(out)
  return { think: `${parts.join(", ")} -> ${result}`, result, carrySites, stepSites }
}

const multiply = (a: number, b: number, fault?: Fault): Work => {
  // Partial products over the digits of the operand with fewer digits keep the text short.
  const [big, small] = String(a).length >= String(b).length ? [a, b] : [b, a]
  const parts: Array<string> = []
  const partials: Array<number> = []
  let carrySites = 0, stepSites = 0
  digitsOf(small).forEach((d, j) => {
    if (d === 0) return
    // big * d column by column, so that a dropped carry is a real slip of the hand method.
    const out: Array<number> = []
    let carry = 0
    for (const x of digitsOf(big)) {
      let cin = carry
      if (cin > 0) {
        if (fault?.kind === "dropped_carry" && fault.site === carrySites) cin = 0
        carrySites++
      }
      const v = x * d + cin
      out.push(v % 10)
      carry = Math.floor(v / 10)
    }
    if (carry > 0) out.push(carry)
    let p = fromDigits(out) * 10 ** j
    if (fault?.kind === "off_by_one" && fault.site === stepSites) p = p + fault.delta * 10 ** j > 0 ? p + fault.delta * 10 ** j : p - fault.delta * 10 ** j
    stepSites++
    partials.push(p)
    parts.push(`${big}*${d}${"0".repeat(j)}=${p}`)
  })
  const result = partials.reduce((x, y) => x + y, 0)
  if (partials.length > 1) parts.push(`${partials.join("+")}=${result}`)
  return { think: `${parts.join(", ")} -> ${result}`, result, carrySites, stepSites }
}

/**
 * The column-wise worked solution, with `fault` applied when given. It opens by restating the
 * problem (`47+85: …`): the columns then read their digits from a few tokens back rather than from
 * the question, which a small model learns far sooner.
 */
export const work = (p: Pick<Problem, "a" | "b" | "op">, fault?: Fault): Work => {
  const w = p.op === "+" ? add(p.a, p.b, fault) : p.op === "-" ? subtract(p.a, p.b, fault) : multiply(p.a, p.b, fault)
  return { ...w, think: `${p.a}${p.op}${p.b}: ${w.think}` }
}

/** The correct completion for a problem. */
export const solution = (p: Pick<Problem, "a" | "b" | "op">): string => {
  const w = work(p)
  return Corpus.format(w.think, String(w.result))
}

/** A wrong but well-formed solution: a dropped carry/borrow where there is one (half the time), else an off-by-one step. */
const wrong = (rng: Rng.Stream, p: Problem): { completion: string; flaw: Corpus.Flaw } => {
  const clean = work(p)
  const delta = rng.nextInt(2) === 0 ? 1 : -1
  const fault: Fault = clean.carrySites > 0 && rng.nextInt(2) === 0
    ? { kind: "dropped_carry", site: rng.nextInt(clean.carrySites), delta }
    : { kind: "off_by_one", site: rng.nextInt(clean.stepSites), delta }
  const w = work(p, fault)
  return { completion: Corpus.format(w.think, String(w.result)), flaw: fault.kind }
}

/**
 * A base corpus over train-split problems (never a held-out one): `round(count · wrongFraction)`
 * flawed solutions (default 35 %), two thirds wrong and one third unfinished.
 */
export const corpus = Effect.fnUntraced(function*(
  options: Options & { readonly wrongFraction?: number }
): Effect.fn.Return<Array<Corpus.Row>, Task.InvalidOptions | Task.Exhausted> {
  const wrongFraction = options.wrongFraction ?? Corpus.DEFAULT_WRONG_FRACTION
  if (!(wrongFraction >= 0 && wrongFraction <= 1)) {
    return yield* new Task.InvalidOptions({ task: "arithmetic", message: `wrongFraction must be in [0, 1], got ${wrongFraction}` })
  }
  const ps = yield* problems({ ...options, split: "train" }, "arithmetic/corpus")
  const rng = Rng.make(options.seed, "arithmetic/corpus/flaws")
  const plan = Corpus.plan(rng, ps.length, wrongFraction)
  return ps.map((p, i): Corpus.Row => {
    const prompt = question(p)
    if (plan[i] === "none") return { prompt, completion: solution(p), correct: true, flaw: "none" }
    if (plan[i] === "wrong") return { prompt, ...wrong(rng, p), correct: false }
    const w = work(p)
    return { prompt, ...Corpus.unfinish(rng, w.think, String(w.result)), correct: false }
  })
})
