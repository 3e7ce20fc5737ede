/**
 * Countdown, TinyZero's task: combine all of 3 or 4 numbers, each exactly once, with + - * / to
 * reach a target.
 *
 * Convention (ours, stricter than TinyZero's float `eval`): every intermediate value is a positive
 * integer, so `-` only when the result is positive and `/` only when it divides exactly. Only
 * instances solvable under it are generated, so each is solvable under TinyZero's rule too. The
 * target is drawn uniformly among the values in [1, maxTarget] the numbers can reach, and the
 * solver that enumerates them also writes the corpus solutions, step by step:
 *
 *   [3, 7, 25] → 46:   7*3=21, 25+21=46   answer  25+7*3
 */
import { Rng } from "@r1flow/core"
import { Effect, Option } from "effect"
import * as Corpus from "./Corpus.js"
import * as Task from "./Task.js"

/** One instance. */
export interface Problem {
  readonly numbers: ReadonlyArray<number>
  readonly target: number
}

/** What to generate. Numbers are uniform in [1, maxNumber]. */
export interface Options {
  readonly seed: number
  readonly count: number
  readonly numbers: 3 | 4
  /** Largest target; default 100. */
  readonly maxTarget?: number
  /** Largest number; default 100 (TinyZero draws 1–100). */
  readonly maxNumber?: number
}

const DEFAULT_MAX_TARGET = 100
const DEFAULT_MAX_NUMBER = 100

/** The problem's identity for the split: the numbers as a multiset, and the target. */
export const canonical = (p: Problem): string => `${[...p.numbers].sort((x, y) => x - y).join(",")}=${p.target}`

/** The R1-Zero question (TinyZero's wording). */
export const question = (p: Problem): string =>
  `Using the numbers [${p.numbers.join(", ")}], create an equation that equals ${p.target}. You can use + - * / and each number once.`

/** The task row for an instance: the reference answer is the target; metadata `{ numbers, target }`. */
export const toRow = (p: Problem): Task.Row => ({
  id: `countdown/${canonical(p)}`,
  question: question(p),
  answer: String(p.target),
  metadata: { numbers: [...p.numbers], target: p.target }
})

// ---------------------------------------------------------------------------------------------
// Solver

/** A partial expression: its value, its text, its operator precedence (3 for a number), and the steps that built it. */
interface Term {
  readonly value: number
  readonly text: string
  readonly prec: number
  readonly steps: ReadonlyArray<string>
}

const PREC = { "+": 1, "-": 1, "*": 2, "/": 2 } as const
type Op = keyof typeof PREC

const combine = (x: Term, op: Op, y: Term, value: number): Term => {
  const p = PREC[op]
  const left = x.prec < p ? `(${x.text})` : x.text
  // a-(b+c), a/(b*c): a right operand of equal precedence needs parentheses under - and /.
  const right = y.prec < p || (y.prec === p && (op === "-" || op === "/")) ? `(${y.text})` : y.text
  return { value, text: `${left}${op}${right}`, prec: p, steps: [...x.steps, ...y.steps, `${x.value}${op}${y.value}=${value}`] }
}

/** Every positive-integer result of combining the pair, larger operand first. */
const results = (x: Term, y: Term): Array<Term> => {
  const [hi, lo] = x.value >= y.value ? [x, y] : [y, x]
  const out = [combine(hi, "+", lo, hi.value + lo.value), combine(hi, "*", lo, hi.value * lo.value)]
  if (hi.value > lo.value) out.push(combine(hi, "-", lo, hi.value - lo.value))
  if (hi.value % lo.value === 0) out.push(combine(hi, "/", lo, hi.value / lo.value))
  return out
}

/** Visits every full expression over `terms` in a fixed order; stops when `visit` returns true. */
const explore = (terms: ReadonlyArray<Term>, visit: (t: Term) => boolean): boolean => {
  if (terms.length === 1) return visit(terms[0])
  for (let i = 0; i < terms.length; i++) {
    for (let j = i + 1; j < terms.length; j++) {
      const rest = terms.filter((_, k) => k !== i && k !== j)
      for (const r of results(terms[i], terms[j])) if (explore([...rest, r], visit)) return true
    }
  }
  return false
}

const leaves = (numbers: ReadonlyArray<number>): Array<Term> => numbers.map((n) => ({ value: n, text: String(n), prec: 3, steps: [] }))

const find = (numbers: ReadonlyArray<number>, target: number): Term | undefined => {
  let found: Term | undefined
  explore(leaves(numbers), (t) => {
    if (t.value === target) found = t
    return found !== undefined
  })
  return found
}

/** One expression using every number once that evaluates to `target` under the convention above, if any. */
export const solve = (numbers: ReadonlyArray<number>, target: number): Option.Option<string> =>
  Option.fromNullishOr(find(numbers, target)?.text)

/** Every reachable value, with the first expression found for it. */
const reachable = (numbers: ReadonlyArray<number>): Map<number, Term> => {
  const seen = new Map<number, Term>()
  explore(leaves(numbers), (t) => {
    if (!seen.has(t.value)) seen.set(t.value, t)
    return false
  })
  return seen
}

// ---------------------------------------------------------------------------------------------
// Checking an answer

/** An arithmetic expression's value and the numbers it uses, or `undefined` if it does not parse. */
export const evaluate = (expression: string): { readonly value: number; readonly numbers: ReadonlyArray<number> } | undefined => {
  const tokens = expression.match(/\d+|[-+*/()]|\S/g) ?? []
  const numbers: Array<number> = []
  let at = 0
  // Recursive descent: expr := term (('+'|'-') term)*; term := factor (('*'|'/') factor)*; factor := int | '(' expr ')'.
  const factor = (): number | undefined => {
    const t = tokens[at++]
    if (t === undefined) return undefined
    if (/^\d+$/.test(t)) {
      numbers.push(Number(t))
      return Number(t)
    }
    if (t !== "(") return undefined
    const v = expr()
    return tokens[at++] === ")" ? v : undefined
  }
  const term = (): number | undefined => {
    let v = factor()
    while (v !== undefined && (tokens[at] === "*" || tokens[at] === "/")) {
      const op = tokens[at++]
      const w = factor()
      v = w === undefined ? undefined : op === "*" ? v * w : v / w
    }
    return v
  }
  const expr = (): number | undefined => {
    let v = term()
    while (v !== undefined && (tokens[at] === "+" || tokens[at] === "-")) {
      const op = tokens[at++]
      const w = term()
      v = w === undefined ? undefined : op === "+" ? v + w : v - w
    }
    return v
  }
  const value = expr()
  return value === undefined || at !== tokens.length || tokens.length === 0 ? undefined : { value, numbers }
}

/** Whether `expression` uses exactly the given numbers, each once, and equals `target` (TinyZero's check). */
export const check = (expression: string, numbers: ReadonlyArray<number>, target: number): boolean => {
  const e = evaluate(expression)
  if (e === undefined) return false
  const used = [...e.numbers].sort((x, y) => x - y).join(",")
  return used === [...numbers].sort((x, y) => x - y).join(",") && Math.abs(e.value - target) < 1e-6
}

// ---------------------------------------------------------------------------------------------
// Generation

const validate = (options: Options): Task.InvalidOptions | undefined => {
  const bad = (message: string) => new Task.InvalidOptions({ task: "countdown", message })
  const maxTarget = options.maxTarget ?? DEFAULT_MAX_TARGET
  const maxNumber = options.maxNumber ?? DEFAULT_MAX_NUMBER
  if (!Number.isInteger(options.count) || options.count < 0) return bad(`count must be a non-negative integer, got ${options.count}`)
  if (options.numbers !== 3 && options.numbers !== 4) return bad(`numbers must be 3 or 4, got ${options.numbers}`)
  if (!Number.isInteger(maxTarget) || maxTarget < 1) return bad(`maxTarget must be a positive integer, got ${maxTarget}`)
  if (!Number.isInteger(maxNumber) || maxNumber < 1) return bad(`maxNumber must be a positive integer, got ${maxNumber}`)
  return undefined
}

/** Draws numbers, then a reachable target of the wanted split (a draw with none is discarded). */
const drawer = (rng: Rng.Stream, options: Options, split: Task.Split) => {
  const maxTarget = options.maxTarget ?? DEFAULT_MAX_TARGET
  const maxNumber = options.maxNumber ?? DEFAULT_MAX_NUMBER
  return (): Problem | undefined => {
    const numbers = Array.from({ length: options.numbers }, () => 1 + rng.nextInt(maxNumber))
    const targets = [...reachable(numbers).keys()]
      .filter((t) => t <= maxTarget && Task.splitOf(canonical({ numbers, target: t })) === split)
      .sort((x, y) => x - y)
    return targets.length === 0 ? undefined : { numbers, target: targets[rng.nextInt(targets.length)] }
  }
}

const problems = Effect.fnUntraced(function*(options: Options & { readonly split: Task.Split }, stream: string) {
  const invalid = validate(options)
  if (invalid !== undefined) return yield* invalid
  const draw = drawer(Rng.make(options.seed, stream), options, options.split)
  return yield* Task.sample({ task: "countdown", split: options.split, count: options.count, draw, canonical })
})

/** `count` distinct solvable instances of `split`, the same for the same options. */
export const generate = Effect.fnUntraced(function*(
  options: Options & { readonly split: Task.Split }
): Effect.fn.Return<Array<Task.Row>, Task.InvalidOptions | Task.Exhausted> {
  const ps = yield* problems(options, `countdown/${options.split}`)
  return ps.map(toRow)
})

// ---------------------------------------------------------------------------------------------
// Corpus

/** The solver's steps and expression as a completion. */
export const solution = (p: Problem): Option.Option<string> =>
  Option.map(Option.fromNullishOr(find(p.numbers, p.target)), (t) => Corpus.format(t.steps.join(", "), t.text))

/** The reachable value closest to the target but not on it. */
const nearMiss = (p: Problem): Term => {
  let best: Term | undefined
  for (const [v, t] of reachable(p.numbers)) {
    if (v !== p.target && (best === undefined || Math.abs(v - p.target) < Math.abs(best.value - p.target))) best = t
  }
  // The sum of all numbers differs from (sum of the rest) × smallest, so two values are always reachable and
  // `best` exists; the fallback only satisfies the type.
  return best ?? { value: p.numbers.reduce((x, y) => x + y, 0), text: p.numbers.join("+"), prec: 1, steps: [] }
}

/**
 * A wrong but well-formed solution, one of three kinds chosen uniformly: an expression that leaves
 * a number out yet reaches the target (where one exists, about one instance in ten; else a near
 * miss), a near miss (the closest reachable value, honestly worked), or a false step (the near
 * miss's last step claims the target).
 */
const wrong = (rng: Rng.Stream, p: Problem): { completion: string; flaw: Corpus.Flaw } => {
  const kind = rng.nextInt(3)
  if (kind === 0) {
    const start = rng.nextInt(p.numbers.length)
    for (let k = 0; k < p.numbers.length; k++) {
      const skip = (start + k) % p.numbers.length
      const t = find(p.numbers.filter((_, i) => i !== skip), p.target)
      if (t !== undefined) return { completion: Corpus.format(t.steps.join(", "), t.text), flaw: "missing_number" }
    }
  }
  const t = nearMiss(p)
  if (kind === 2 && t.steps.length > 0) {
    const steps = [...t.steps]
    steps[steps.length - 1] = steps[steps.length - 1].replace(/=\d+$/, `=${p.target}`)
    return { completion: Corpus.format(steps.join(", "), t.text), flaw: "false_step" }
  }
  return { completion: Corpus.format(t.steps.join(", "), t.text), flaw: "near_miss" }
}

/**
 * A base corpus over train-split instances: `round(count · wrongFraction)` flawed solutions
 * (default 35 %), two thirds wrong and one third unfinished.
 */
export const corpus = Effect.fnUntraced(function*(
  options: Options & { readonly wrongFraction?: number }
): Effect.fn.Return<Array<Corpus.Row>, Task.InvalidOptions | Task.Exhausted> {
  const wrongFraction = options.wrongFraction ?? Corpus.DEFAULT_WRONG_FRACTION
  if (!(wrongFraction >= 0 && wrongFraction <= 1)) {
    return yield* new Task.InvalidOptions({ task: "countdown", message: `wrongFraction must be in [0, 1], got ${wrongFraction}` })
  }
  const ps = yield* problems({ ...options, split: "train" }, "countdown/corpus")
  const rng = Rng.make(options.seed, "countdown/corpus/flaws")
  const plan = Corpus.plan(rng, ps.length, wrongFraction)
  return ps.map((p, i): Corpus.Row => {
    const prompt = question(p)
    const t = find(p.numbers, p.target)!
    if (plan[i] === "none") return { prompt, completion: Corpus.format(t.steps.join(", "), t.text), correct: true, flaw: "none" }
    if (plan[i] === "wrong") return { prompt, ...wrong(rng, p), correct: false }
    return { prompt, ...Corpus.unfinish(rng, t.steps.join(", "), t.text), correct: false }
  })
})
