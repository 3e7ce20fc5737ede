/**
 * DeepSeek-R1's cold-start set: readable long chains of thought, written for the generated tasks,
 * that an `sft` stage trains on before reasoning RL.
 *
 * R1's form is `|special_token|<reasoning_process>|special_token|<summary>`. Its equivalent here is
 * the R1 template's: `<think>` reasoning `</think><answer>` answer `</answer>`, minus whatever the
 * prompt template already opened (`completion(chain, "<think>")` leaves the first tag out). The
 * answer block holds the bare answer, because both accuracy rewards read the whole block as the
 * answer (countdown's refuses any character but digits, `+ - * / ( )` and spaces); the readable
 * summary is the reasoning's last sentence.
 *
 * Each chain restates the problem, works it step by step, reflects and verifies, then sums up:
 *
 *   arithmetic  column by column from the ones with carries (+) or borrows (-), or partial products
 *               per digit of the shorter operand (*); verified by the inverse operation:
 *               r − b = a by place-value parts of b, r + b = a likewise, p ÷ a = b by long division
 *   countdown   a depth-first search (combine two numbers, then the result with the rest) whose last
 *               dead ends are told and backed out of, sometimes a caught mistake (a number used twice
 *               or left out), the hit, then the equation re-evaluated innermost first and its numbers
 *               checked against the given ones
 *
 * Equations are written in one of two notations (`Work`): `"prose"` spells each column out in words
 * ("Ones: 7 + 5 = 12. Write 2, carry 1."), the form a pretrained LLM reads; `"corpus"` writes each
 * computation in the built-in pretraining corpus's own worked notation (`47+85: 7+5=12 c1, 4+8+1=13 c1
 * -> 132`, countdown's `7*3=21, 25+21=46`) inside the same prose. R1's cold start is written in its base
 * model's language; a small model pretrained on our corpus has learnt its digit facts in that notation
 * only, and the prose chain's spaced, word-interleaved columns do not reach them (measured: a base at
 * 70 % on arithmetic fell to 4 % after a prose cold start; see the README).
 *
 * Some prose chains slip and catch it ("Wait, I left out the carry …"), as R1's do. Every equation a
 * chain writes (`x op y = z`, chained `=`) is true, slips included: a slip is an incomplete step,
 * never a wrong sum. Phrasing is drawn from small sets of templates by a stream seeded with the run
 * seed and the row id (`Rng.make(seed, "cold-start/<id>")`), so a row's chain does not depend on
 * which other rows are in the set.
 *
 * The generator is chosen by the metadata's shape (`{ a, b, op }` or `{ numbers, target }`), not by
 * `metadata.task`, so mixtures whose entries have their own names work; a row of any other task
 * (gsm8k, jsonl, parquet) has no chain.
 */
import { Rng } from "@r1flow/core"
import * as Arithmetic from "./Arithmetic.js"
import type * as Task from "./Task.js"

/** The tasks that have a cold-start generator. */
export type Generator = "arithmetic" | "countdown"

/** How a chain writes its computations (see the module doc). */
export type Work = "prose" | "corpus"

/** One chain of thought: the reasoning (inside the think block) and the bare answer (inside the answer block). */
export interface Chain {
  readonly generator: Generator
  readonly reasoning: string
  readonly answer: string
}

/** The chain as a completion, without the `completionPrefix` the prompt template opened it with (`""` or `"<think>"`). */
export const completion = (chain: Chain, completionPrefix = ""): string => {
  const full = `<think>${chain.reasoning}</think><answer>${chain.answer}</answer>`
  return full.startsWith(completionPrefix) ? full.slice(completionPrefix.length) : full
}

// ---------------------------------------------------------------------------------------------
// Phrasing

const pick = <A>(rng: Rng.Stream, options: ReadonlyArray<A>): A => options[rng.nextInt(options.length)]

/** "3, 7 and 25". */
const list = (xs: ReadonlyArray<number | string>): string =>
  xs.length <= 1 ? xs.join("") : `${xs.slice(0, -1).join(", ")} and ${xs[xs.length - 1]}`

const capital = (s: string) => s.charAt(0).toUpperCase() + s.slice(1)

/** Share of chains that slip on a carry/borrow and catch it. */
const SLIP_RATE = 0.3

const REFLECT = [
  "Wait, let me double-check that.",
  "Hmm, before I answer, let me verify it.",
  "Let me make sure I did not slip anywhere.",
  "Wait, is that right? Let me check it another way.",
  "Let me double-check by working backwards."
] as const

const CONFIRM = ["That matches.", "It checks out.", "Good, that is consistent.", "Yes, that agrees."] as const

// ---------------------------------------------------------------------------------------------
// Arithmetic

const PLACES = ["ones", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands", "millions", "ten-millions"] as const

const digitsOf = (n: number) => String(n).split("").reverse().map(Number)

/** One column's line, in the chain's style: `expr = s`, then the digit written and the carry kept. */
const columnLine = (style: number, place: string, expr: string, s: number, digit: number, carry: number): string => {
  const tail = carry > 0
    ? [`Write ${digit}, carry ${carry}.`, `so ${digit} goes down and ${carry} is carried.`, `digit ${digit}, carry ${carry}.`][style]
    : [`Write ${digit}.`, `so ${digit} goes down.`, `digit ${digit}, nothing to carry.`][style]
  return [`${capital(place)}: ${expr} = ${s}. ${tail}`, `${capital(place)} column: ${expr} = ${s}, ${tail}`, `In the ${place}, ${expr} = ${s}: ${tail}`][style]
}

const addLines = (rng: Rng.Stream, style: number, a: number, b: number): Array<string> => {
  const A = digitsOf(a), B = digitsOf(b)
  const lines: Array<string> = []
  let carry = 0
  for (let i = 0; i < Math.max(A.length, B.length); i++) {
    const terms = [A[i], B[i]].filter((d) => d !== undefined)
    if (terms.length === 1 && carry === 0) {
      lines.push(`${capital(PLACES[i])}: only ${terms[0]} is there, so it comes down as it is.`)
      continue
    }
    const slip = carry > 0 && terms.length === 2 && rng.nextFloat() < SLIP_RATE
      ? `${terms.join(" + ")} = ${terms[0] + terms[1]}. Wait, I left out the carry from the ${PLACES[i - 1]}. `
      : ""
    const all = carry > 0 ? [...terms, carry] : terms
    const s = all.reduce((x, y) => x + y, 0)
    carry = Math.floor(s / 10)
    const line = columnLine(style, PLACES[i], all.join(" + "), s, s % 10, carry)
    lines.push(slip === "" ? line : `${capital(PLACES[i])}: ${slip}${line}`)
  }
  if (carry > 0) lines.push(`The last carry, ${carry}, becomes the ${PLACES[Math.max(A.length, B.length)]} digit.`)
  return lines
}

/** The line of one subtraction column `x − y − lent` (y absent past the shorter operand); returns the borrow it takes. */
const subtractColumn = (rng: Rng.Stream, place: string, next: string, prev: string, x: number, y: number | undefined, lent: number) => {
  const expr = (top: number) => [String(top), ...(y === undefined ? [] : [String(y)]), ...(lent > 0 ? ["1"] : [])].join(" - ")
  const t = x - (y ?? 0) - lent
  const borrow = t < 0 ? 1 : 0
  const digit = t + 10 * borrow
  const owed = lent > 0 ? ` (the 1 is what this column lent to the ${prev})` : ""
  const body = borrow > 0
    ? `${expr(x)} would go below zero, so borrow 1 from the ${next}: ${expr(x + 10)} = ${digit}${owed}.`
    : `${expr(x)} = ${digit}${owed}.`
  const slipTop = x - (y ?? 0) >= 0 ? x : x + 10
  const slip = lent > 0 && y !== undefined && rng.nextFloat() < SLIP_RATE
    ? `${slipTop} - ${y} = ${slipTop - y}. Wait, this column lent 1 to the ${prev}, so that has to come off too. `
    : ""
  return { line: `${capital(place)}: ${slip}${body}`, borrow, digit }
}

const subtractLines = (rng: Rng.Stream, a: number, b: number): { lines: Array<string>; digits: Array<number> } => {
  const A = digitsOf(a), B = digitsOf(b)
  const lines: Array<string> = []
  const digits: Array<number> = []
  let lent = 0
  for (let i = 0; i < A.length; i++) {
    if (B[i] === undefined && lent === 0) {
      lines.push(`${capital(PLACES[i])}: nothing to take away, so ${A[i]} comes down.`)
      digits.push(A[i])
      continue
    }
    const c = subtractColumn(rng, PLACES[i], PLACES[i + 1] ?? "next place", PLACES[i - 1] ?? "", A[i], B[i], lent)
    lines.push(c.line)
    digits.push(c.digit)
    lent = c.borrow
  }
  return { lines, digits }
}

/** `big × d` digit by digit, as one line; the carry slip is caught in place. */
const timesDigit = (rng: Rng.Stream, big: number, d: number): { text: string; value: number } => {
  const parts: Array<string> = []
  let carry = 0
  for (const x of digitsOf(big)) {
    const v = x * d + carry
    const slip = carry > 0 && rng.nextFloat() < SLIP_RATE / 2 ? `${x} * ${d} = ${x * d}, wait, plus the carry ${carry}: ` : ""
    parts.push(`${slip}${x} * ${d}${carry > 0 ? ` + ${carry}` : ""} = ${v}`)
    carry = Math.floor(v / 10)
  }
  return { text: parts.join("; "), value: big * d }
}

const multiplyLines = (rng: Rng.Stream, a: number, b: number): Array<string> => {
  if (a < 10 && b < 10) return [`${a} * ${b} = ${a * b}, straight from the times table.`]
  const [big, small] = String(a).length >= String(b).length ? [a, b] : [b, a]
  const lines = [small < 10
    ? pick(rng, [`I'll multiply ${big} by ${small} digit by digit, from the ones, carrying as I go.`, `Multiply each digit of ${big} by ${small}, starting from the ones.`])
    : pick(rng, [
      `I'll multiply ${big} by each digit of ${small} and add up the partial products.`,
      `Split ${small} into its digits, multiply ${big} by each, shift by place value, and add.`
    ])]
  const partials: Array<number> = []
  digitsOf(small).forEach((d, j) => {
    if (d === 0) {
      lines.push(`The ${PLACES[j]} digit of ${small} is 0, so that partial product is 0.`)
      return
    }
    const t = timesDigit(rng, big, d)
    const p = t.value * 10 ** j
    partials.push(p)
    lines.push(`${capital(PLACES[j])} digit ${d}: ${t.text}, so ${big} * ${d} = ${t.value}${j > 0 ? `, and shifted ${big} * ${d * 10 ** j} = ${p}` : ""}.`)
  })
  lines.push(partials.length > 1
    ? `Adding the partial products: ${partials.join(" + ")} = ${a * b}.`
    : `There is only one partial product, so the product is ${a * b}.`)
  return lines
}

/** Place-value parts of `n`, highest first: 305 → [300, 5]. */
const parts = (n: number): Array<number> =>
  digitsOf(n).map((d, j) => d * 10 ** j).filter((p) => p > 0).reverse()

/** `from ∓ n` one place-value part of `n` at a time, as equations. */
const stepwise = (from: number, n: number, sign: 1 | -1): { text: string; end: number } => {
  const steps: Array<string> = []
  let at = from
  for (const p of parts(n)) {
    steps.push(`${at} ${sign > 0 ? "+" : "-"} ${p} = ${at + sign * p}`)
    at += sign * p
  }
  return { text: steps.length === 0 ? `${from} stays ${from}` : steps.join(", then "), end: at }
}

/** The inverse-operation check of `a op b = r`. */
const inverseCheck = (rng: Rng.Stream, a: number, b: number, op: Arithmetic.Op, r: number): string => {
  if (op === "+") {
    const s = stepwise(r, b, -1)
    return `If the sum is right, taking ${b} away from ${r} gives back ${a}: ${s.text}. That is ${s.end}, the first number. ${pick(rng, CONFIRM)}`
  }
  if (op === "-") {
    const s = stepwise(r, b, 1)
    return `If the difference is right, adding ${b} back to ${r} gives ${a}: ${s.text}. Back to ${s.end}. ${pick(rng, CONFIRM)}`
  }
  const [big, small] = String(a).length >= String(b).length ? [a, b] : [b, a]
  const steps: Array<string> = []
  let left = r
  for (const q of parts(small)) {
    steps.push(`${big} * ${q} = ${big * q}, and ${left} - ${big * q} = ${left - big * q}`)
    left -= big * q
  }
  const quotient = parts(small).length > 1 ? `${parts(small).join(" + ")} = ${small}` : `${small}`
  return `Dividing back, ${r} / ${big} should be ${small}. ${steps.join("; ")}. Nothing is left over, and the quotient is ${quotient}, the other factor. ${pick(rng, CONFIRM)}`
}

/** One significant figure: 47 → 50, 348 → 300. */
const roughly = (n: number) => {
  const unit = 10 ** (String(n).length - 1)
  return Math.round(n / unit) * unit
}

/** A size estimate, for operands of two digits or more (and a positive rounded difference). */
const estimate = (a: number, b: number, op: Arithmetic.Op, r: number): string | undefined => {
  const x = roughly(a), y = roughly(b)
  if (a < 10 || b < 10 || (op === "-" && x <= y)) return undefined
  const e = Arithmetic.evaluate({ a: x, b: y, op })
  return `As a rough size check, ${a} is about ${x} and ${b} is about ${y}, and ${x} ${op} ${y} = ${e}, ${op === "*" ? "the same order of size as" : "not far from"} ${r}.`
}

const OPENINGS = [
  (q: string) => `The question asks for ${q}.`,
  (q: string) => `I need to compute ${q}.`,
  (q: string) => `We want the value of ${q}.`,
  (q: string) => `Let me work out ${q} by hand.`
] as const

const METHODS: Record<"+" | "-", ReadonlyArray<string>> = {
  "+": [
    "I'll add column by column, starting from the ones and carrying whenever a column reaches 10.",
    "Line the numbers up by place value and add from the right, carrying as needed.",
    "Adding digit by digit from the ones place, with carries."
  ],
  "-": [
    "I'll subtract column by column from the ones, borrowing when the top digit is too small.",
    "Line them up by place value and subtract from the right, borrowing from the next column when needed.",
    "Subtracting digit by digit from the ones place, with borrows."
  ]
}

/** The readable digits of a result, leading zeros of a subtraction dropped. */
const readOff = (digits: ReadonlyArray<number>, value: number): string => {
  const top = [...digits].reverse()
  return top.length > 1 && top[0] === 0
    ? `Reading the digits from the left, ${top.join(", ")}; without the leading zeros that is ${value}.`
    : `Reading the digits from the left: ${top.join(", ")}.`
}

/** The opening line of a corpus-notation chain's worked step, per operation. */
const WORKED: Record<Arithmetic.Op, ReadonlyArray<string>> = {
  "+": ["Column by column from the ones, carrying:", "Adding the columns from the right:", "Working it out by columns:"],
  "-": ["Column by column from the ones, borrowing:", "Subtracting the columns from the right:", "Working it out by columns:"],
  "*": ["Digit by digit, with partial products:", "Multiplying by each digit and adding:", "Working it out by partial products:"]
}

/** The inverse check of `a op b = r` as the corpus works it (`r-b` or `r+b` by columns); a product keeps the prose division. */
const inverseWorked = (rng: Rng.Stream, a: number, b: number, op: Arithmetic.Op, r: number): string => {
  if (op === "*") return inverseCheck(rng, a, b, op, r)
  const back = Arithmetic.work({ a: r, b, op: op === "+" ? "-" : "+" }).think
  return op === "+"
    ? `If the sum is right, taking ${b} away from ${r} gives back ${a}: ${back}. That is ${a}, the first number. ${pick(rng, CONFIRM)}`
    : `If the difference is right, adding ${b} back to ${r} gives ${a}: ${back}. Back to ${a}. ${pick(rng, CONFIRM)}`
}

/** The computation of a prose chain, column by column in words. */
const proseLines = (rng: Rng.Stream, a: number, b: number, op: Arithmetic.Op, r: number): Array<string> => {
  if (op === "+") return [pick(rng, METHODS["+"]), ...addLines(rng, rng.nextInt(3), a, b), readOff(digitsOf(r), r)]
  if (op === "-") {
    const s = subtractLines(rng, a, b)
    return [pick(rng, METHODS["-"]), ...s.lines, readOff(s.digits, r)]
  }
  return multiplyLines(rng, a, b)
}

const arithmeticChain = (rng: Rng.Stream, a: number, b: number, op: Arithmetic.Op, work: Work): Chain => {
  const q = `${a} ${op} ${b}`
  const r = Arithmetic.evaluate({ a, b, op })
  const lines = [pick(rng, OPENINGS)(q)]
  if (work === "prose") lines.push(...proseLines(rng, a, b, op, r))
  else lines.push(pick(rng, WORKED[op]), `${Arithmetic.work({ a, b, op }).think}.`)
  lines.push(`So ${q} = ${r}.`, pick(rng, REFLECT), work === "prose" ? inverseCheck(rng, a, b, op, r) : inverseWorked(rng, a, b, op, r))
  const e = estimate(a, b, op, r)
  if (e !== undefined && rng.nextFloat() < 0.4) lines.push(e)
  lines.push(pick(rng, [`So the answer is ${r}.`, `Therefore ${q} = ${r}.`, `The answer: ${q} = ${r}.`]))
  return { generator: "arithmetic", reasoning: `\n${lines.join("\n")}\n`, answer: String(r) }
}

// ---------------------------------------------------------------------------------------------
// Countdown

type CdOp = "+" | "-" | "*" | "/"
const PREC: Record<CdOp, number> = { "+": 1, "-": 1, "*": 2, "/": 2 }

/** An expression tree: a number, or `left op right` with `left` the larger operand. */
interface Node {
  readonly value: number
  readonly op?: CdOp
  readonly left?: Node
  readonly right?: Node
}

const leaf = (value: number): Node => ({ value })
const precOf = (n: Node) => (n.op === undefined ? 3 : PREC[n.op])

/** The expression's text, parenthesised only where precedence needs it (`a - (b + c)`, `a / (b * c)`). */
const render = (n: Node): string => {
  if (n.op === undefined) return String(n.value)
  const p = PREC[n.op]
  const l = precOf(n.left!) < p ? `(${render(n.left!)})` : render(n.left!)
  const rp = precOf(n.right!)
  const r = rp < p || (rp === p && (n.op === "-" || n.op === "/")) ? `(${render(n.right!)})` : render(n.right!)
  return `${l} ${n.op} ${r}`
}

/** The steps that build `n`, innermost first: `["7 * 3 = 21", "25 + 21 = 46"]`. */
const steps = (n: Node): Array<string> =>
  n.op === undefined ? [] : [...steps(n.left!), ...steps(n.right!), `${n.left!.value} ${n.op} ${n.right!.value} = ${n.value}`]

/** The numbers an expression uses, left to right. */
const numbersOf = (n: Node): Array<number> => (n.op === undefined ? [n.value] : [...numbersOf(n.left!), ...numbersOf(n.right!)])

/** `n` with its first innermost operation replaced by its value. */
const reduceOnce = (n: Node): Node => {
  if (n.op === undefined) return n
  if (n.left!.op === undefined && n.right!.op === undefined) return leaf(n.value)
  return n.left!.op !== undefined ? { ...n, left: reduceOnce(n.left!) } : { ...n, right: reduceOnce(n.right!) }
}

/** Every positive-integer combination of two values, larger first (the generator's convention). */
const combinations = (x: Node, y: Node): Array<Node> => {
  const [hi, lo] = x.value >= y.value ? [x, y] : [y, x]
  const out: Array<Node> = [{ value: hi.value + lo.value, op: "+", left: hi, right: lo }, { value: hi.value * lo.value, op: "*", left: hi, right: lo }]
  if (hi.value > lo.value) out.push({ value: hi.value - lo.value, op: "-", left: hi, right: lo })
  if (hi.value % lo.value === 0) out.push({ value: hi.value / lo.value, op: "/", left: hi, right: lo })
  return out
}

/** What a search saw: the hit (if any), how many full expressions missed, and the last few misses. */
interface Search {
  found: Node | undefined
  misses: number
  readonly last: Array<Node>
}

/** Depth-first over pairs and operations in a shuffled order; stops at the first expression equal to `target`. */
const search = (rng: Rng.Stream, terms: ReadonlyArray<Node>, target: number, keep: number, seen: Search): boolean => {
  if (terms.length === 1) {
    if (terms[0].value === target) {
      seen.found = terms[0]
      return true
    }
    seen.misses++
    seen.last.push(terms[0])
    if (seen.last.length > keep) seen.last.shift()
    return false
  }
  const pairs: Array<[number, number]> = []
  for (let i = 0; i < terms.length; i++) for (let j = i + 1; j < terms.length; j++) pairs.push([i, j])
  for (const [i, j] of rng.shuffle(pairs)) {
    const rest = terms.filter((_, k) => k !== i && k !== j)
    for (const c of rng.shuffle(combinations(terms[i], terms[j]))) if (search(rng, [...rest, c], target, keep, seen)) return true
  }
  return false
}

const verdict = (rng: Rng.Stream, value: number, target: number): string => {
  const off = Math.abs(value - target)
  const how = off <= 3 ? `just ${off} off` : value > target ? "too big" : "too small"
  return `${value}, not ${target}: ${how}. ${pick(rng, ["That doesn't work.", "Dead end.", "No good.", "That misses."])}`
}

/** A caught mistake: an expression that hits the target by using a number twice, or by leaving one out. */
const caughtMistake = (rng: Rng.Stream, numbers: ReadonlyArray<number>, target: number): string | undefined => {
  const found: Array<string> = []
  numbers.forEach((n, i) => {
    if (numbers.filter((m) => m === n).length > 1) return
    for (const twice of combinations(leaf(n), leaf(n))) {
      if (twice.op === "/" || twice.op === "-") continue
      numbers.forEach((m, j) => {
        if (j === i) return
        for (const c of combinations(twice, leaf(m))) {
          if (c.value !== target) continue
          const unused = numbers.filter((_, k) => k !== i && k !== j)
          found.push(`What about ${steps(c).join(", then ")}? That hits ${target}. Wait, that uses ${n} twice${unused.length > 0 ? ` and never uses ${list(unused)}` : ""}. Each number can be used only once, so it doesn't count.`)
        }
      })
    }
  })
  numbers.forEach((n, i) => {
    const s: Search = { found: undefined, misses: 0, last: [] }
    if (numbers.length > 2 && search(rng.split(`without/${i}`), numbers.filter((_, k) => k !== i).map(leaf), target, 0, s)) {
      found.push(`${capital(steps(s.found!).join(", then "))} gives ${target}. But wait, that leaves out ${n}, and every number has to be used.`)
    }
  })
  return found.length === 0 ? undefined : pick(rng, found)
}

const countdownSearchLines = (rng: Rng.Stream, numbers: ReadonlyArray<number>, target: number): { lines: Array<string>; found: Node } | undefined => {
  const seen: Search = { found: undefined, misses: 0, last: [] }
  if (!search(rng.split("search"), numbers.map(leaf), target, 1 + rng.nextInt(3), seen)) return undefined
  const lines: Array<string> = []
  if (seen.misses > seen.last.length) lines.push(`I tried a few combinations first; none of them reached ${target}.`)
  for (const miss of seen.last) {
    lines.push(`${pick(rng, ["Try", "What about", "Next,"])} ${steps(miss).join(", then ")}. That gives ${verdict(rng, miss.value, target)}`)
    lines.push(pick(rng, ["Let me back up and try something else.", "Back up a step.", "Let me go back and pair the numbers differently."]))
  }
  const mistake = rng.nextFloat() < 0.5 ? caughtMistake(rng, numbers, target) : undefined
  if (mistake !== undefined) lines.push(mistake)
  lines.push(`${pick(rng, ["Try", "Now try", "How about"])} ${steps(seen.found!).join(", then ")}. ${pick(rng, [`That's ${target}!`, `That gives exactly ${target}.`, `There it is, ${target}.`])}`)
  return { lines, found: seen.found! }
}

/** The re-evaluation and the used-once check of the final equation. */
const countdownCheck = (rng: Rng.Stream, found: Node, numbers: ReadonlyArray<number>, target: number): Array<string> => {
  const chain = [render(found)]
  for (let n = found; n.op !== undefined;) {
    n = reduceOnce(n)
    chain.push(render(n))
  }
  const sorted = [...numbers].sort((x, y) => x - y)
  return [
    pick(rng, ["Wait, let me double-check that equation.", "Let me verify before answering.", "Hmm, let me re-evaluate it from scratch to be sure."]),
    `Evaluating innermost first: ${chain.join(" = ")}. ${pick(rng, [`That is ${target}, the target.`, `Exactly ${target}. ${pick(rng, CONFIRM)}`])}`,
    `It uses ${list(numbersOf(found))}, and the given numbers are ${list(sorted)}, so each one is used exactly once.`
  ]
}

/** `7 * 3 = 21` → `7*3=21`: an operator or `=` between numbers (or parentheses) loses its spaces, as the corpus writes them. */
const tight = (text: string): string => text.replace(/([\d)]) ([-+*/=]) (?=[\d(])/g, "$1$2")

const countdownChain = (rng: Rng.Stream, numbers: ReadonlyArray<number>, target: number, work: Work): Chain | undefined => {
  const found = countdownSearchLines(rng, numbers, target)
  if (found === undefined) return undefined
  const expression = render(found.found)
  const lines = [
    pick(rng, [
      `We need to reach ${target} using ${list(numbers)}, each exactly once, with + - * /.`,
      `The numbers are ${list(numbers)} and the target is ${target}; every number must be used once.`,
      `Goal: make ${target} from ${list(numbers)}, using each number once.`
    ]),
    pick(rng, [
      "Let me try some combinations: combine two numbers, then the result with what is left.",
      "I'll search: pick a pair, combine it, and continue with the rest.",
      `Let me look for a way to land on ${target}, trying pairs first.`
    ]),
    ...found.lines,
    ...countdownCheck(rng, found.found, numbers, target),
    pick(rng, [`So the equation is ${expression}.`, `The answer is ${expression} = ${target}.`])
  ]
  const reasoning = `\n${lines.join("\n")}\n`
  return { generator: "countdown", reasoning: work === "prose" ? reasoning : tight(reasoning), answer: work === "prose" ? expression : tight(expression) }
}

// ---------------------------------------------------------------------------------------------
// Rows

const isCount = (x: unknown): x is number => typeof x === "number" && Number.isSafeInteger(x) && x >= 0
const MAX_OPERAND = 10 ** 7

/** Which generator a row's metadata fits: arithmetic `{ a, b, op }`, countdown `{ numbers, target }`, else none. */
export const generatorOf = (metadata: Readonly<Record<string, unknown>>): Generator | undefined => {
  const { a, b, op, numbers, target } = metadata
  if (isCount(a) && isCount(b) && (op === "+" || op === "-" || op === "*")) return "arithmetic"
  if (Array.isArray(numbers) && numbers.length >= 2 && numbers.every((n) => isCount(n) && n > 0) && isCount(target) && target > 0) return "countdown"
  return undefined
}

/** The chain for `row`, or why it has none. */
const attempt = (row: Task.Row, seed: number, work: Work): Chain | string => {
  const generator = generatorOf(row.metadata)
  if (generator === undefined) return "no cold-start generator for this task (its metadata is neither arithmetic's { a, b, op } nor countdown's { numbers, target })"
  const rng = Rng.make(seed, `cold-start/${row.id}`)
  if (generator === "arithmetic") {
    const { a, b, op } = row.metadata as { a: number; b: number; op: Arithmetic.Op }
    if (a >= MAX_OPERAND || b >= MAX_OPERAND) return "arithmetic operands over 7 digits"
    if (op === "*" && (a === 0 || b === 0)) return "arithmetic product with a zero operand"
    if (op === "-" && a < b) return "arithmetic subtraction with a negative result"
    if (String(Arithmetic.evaluate({ a, b, op })) !== row.answer.trim()) return "the reference answer disagrees with the metadata"
    return arithmeticChain(rng, a, b, op, work)
  }
  const { numbers, target } = row.metadata as { numbers: Array<number>; target: number }
  if (numbers.length > 5) return "countdown with more than 5 numbers"
  if (String(target) !== row.answer.trim()) return "the reference answer disagrees with the metadata"
  return countdownChain(rng, numbers, target, work) ?? "countdown instance with no solution in positive-integer steps"
}

/** The cold-start chain of a row of a generated task (same seed, row and notation, same chain); `undefined` for any other task. */
export const chain = (row: Task.Row, seed: number, work: Work = "prose"): Chain | undefined => {
  const c = attempt(row, seed, work)
  return typeof c === "string" ? undefined : c
}

/** One example of the set: the raw question (the engine applies the template) and the completion to learn. */
export interface Example {
  readonly id: string
  readonly prompt: string
  readonly completion: string
  readonly generator: Generator
}

/** Rows left out, per task (`metadata.task`, else `"unknown"`) and reason. */
export interface Skipped {
  readonly task: string
  readonly reason: string
  readonly count: number
}

/** A cold-start set. */
export interface Built {
  readonly examples: Array<Example>
  readonly skipped: Array<Skipped>
}

/**
 * The cold-start set of `rows`, in their order: one example per row that has a chain, at most
 * `limit`, in notation `work` (default `"prose"`); every other row counted in `skipped` with its reason.
 */
export const build = (
  rows: ReadonlyArray<Task.Row>,
  options: { readonly seed: number; readonly completionPrefix?: string; readonly limit?: number; readonly work?: Work }
): Built => {
  const examples: Array<Example> = []
  const skipped = new Map<string, { task: string; reason: string; count: number }>()
  for (const row of rows) {
    if (options.limit !== undefined && examples.length >= options.limit) break
    const c = attempt(row, options.seed, options.work ?? "prose")
    if (typeof c !== "string") {
      examples.push({ id: row.id, prompt: row.question, completion: completion(c, options.completionPrefix), generator: c.generator })
      continue
    }
    const task = typeof row.metadata.task === "string" ? row.metadata.task : "unknown"
    const key = `${task}\u0000${c}`
    const s = skipped.get(key) ?? { task, reason: c, count: 0 }
    s.count++
    skipped.set(key, s)
  }
  return { examples, skipped: [...skipped.values()] }
}
