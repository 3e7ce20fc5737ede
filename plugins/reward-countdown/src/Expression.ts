/**
 * A small arithmetic evaluator for countdown answers: integers, `+ - * /`, parentheses, unary
 * signs and whitespace; nothing else. Shunting-yard over a token list, so it is linear in the input
 * and has no recursion for a million `(` to overflow. Never `eval`.
 */

/** The integers written in an expression, in order (`\d+` runs, as TinyZero reads them). */
export const numbersIn = (expression: string): Array<number> => (expression.match(/\d+/g) ?? []).map(Number)

/** Whether every character is a digit, `+ - * / ( )` or whitespace. */
export const allowedCharacters = (expression: string): boolean => /^[\d+\-*/()\s]*$/.test(expression)

type Op = "+" | "-" | "*" | "/" | "neg" | "pos"

const PREC: Record<Op, number> = { "+": 1, "-": 1, "*": 2, "/": 2, neg: 3, pos: 3 }

/** The value of `expression`, or null when it is not a well-formed expression (or divides by zero). */
export const evaluate = (expression: string): number | null => {
  if (!allowedCharacters(expression)) return null
  const values: Array<number> = []
  const ops: Array<Op | "("> = []
  const apply = (op: Op): boolean => {
    if (op === "neg" || op === "pos") {
      if (values.length < 1) return false
      if (op === "neg") values[values.length - 1] = -values[values.length - 1]
      return true
    }
    if (values.length < 2) return false
    const b = values.pop()!
    const a = values.pop()!
    if (op === "/" && b === 0) return false
    values.push(op === "+" ? a + b : op === "-" ? a - b : op === "*" ? a * b : a / b)
    return true
  }
  // `expectOperand`: at the start, after an operator or `(`; a sign there is unary.
  let expectOperand = true
  let i = 0
  while (i < expression.length) {
    const c = expression[i]
    if (c === " " || c === "\t" || c === "\n" || c === "\r" || c === "\f" || c === "\v") {
      i++
    } else if (c >= "0" && c <= "9") {
      if (!expectOperand) return null
      let j = i
      while (j < expression.length && expression[j] >= "0" && expression[j] <= "9") j++
      values.push(Number(expression.slice(i, j)))
      expectOperand = false
      i = j
    } else if (c === "(") {
      if (!expectOperand) return null
      ops.push("(")
      i++
    } else if (c === ")") {
      if (expectOperand) return null
      while (ops.length > 0 && ops[ops.length - 1] !== "(") if (!apply(ops.pop() as Op)) return null
      if (ops.length === 0) return null
      ops.pop()
      i++
    } else {
      let op: Op = c as Op
      if (expectOperand) {
        if (c !== "-" && c !== "+") return null
        op = c === "-" ? "neg" : "pos"
        // Unary operators are right-associative: stack them without popping.
      } else {
        while (ops.length > 0 && ops[ops.length - 1] !== "(" && PREC[ops[ops.length - 1] as Op] >= PREC[op]) if (!apply(ops.pop() as Op)) return null
      }
      ops.push(op)
      expectOperand = true
      i++
    }
  }
  if (expectOperand) return null
  while (ops.length > 0) {
    const op = ops.pop()!
    if (op === "(" || !apply(op)) return null
  }
  return values.length === 1 ? values[0] : null
}
