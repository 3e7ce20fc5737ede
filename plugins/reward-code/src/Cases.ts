/**
 * A row's test cases (from its `metadata` JSON) and how one case's run is judged.
 *
 *   metadata = { "language"?: "python" | "javascript",
 *                "tests": [ { "stdin"?: "1 2\n", "stdout": "3\n" },      // input/output pair
 *                           { "assert": "assert add(1, 2) == 3" } ] }   // appended to the program
 *
 * An input/output case passes when the program exits 0 and its stdout equals `stdout` up to line
 * endings and trailing whitespace. An assertion case runs the solution followed by the snippet; it
 * passes when the process exits 0 and its last stdout line is a nonce the harness read from stdin
 * before the model's code ran and prints only after the snippet finished, so exiting early
 * (`process.exit(0)`, `sys.exit(0)`) before the assertions ran fails.
 */
import { randomBytes } from "node:crypto"
import { Schema } from "effect"
import { HARNESS_JS, HARNESS_PY, Language, type Outcome, type Program } from "./Sandbox.js"

/** One test case. */
export const Case = Schema.Union([
  Schema.Struct({ stdin: Schema.optionalKey(Schema.String), stdout: Schema.String }),
  Schema.Struct({ assert: Schema.String })
])
/** One test case. */
export type Case = typeof Case.Type

/** The part of a row's metadata this reward reads (other keys are ignored). */
export const Spec = Schema.Struct({
  language: Schema.optionalKey(Language),
  tests: Schema.Array(Case).check(Schema.isMinLength(1))
})
/** The part of a row's metadata this reward reads. */
export type Spec = typeof Spec.Type

/** A case's program plus what its run must show to pass. */
export interface Job {
  readonly program: Program
  readonly judge: (outcome: Outcome) => boolean
}

/** Line endings unified, trailing whitespace of each line and trailing blank lines dropped. */
export const normalize = (text: string): string =>
  text.replace(/\r\n?/g, "\n").split("\n").map((l) => l.trimEnd()).join("\n").replace(/\n+$/, "")

// ES module syntax needs an .mjs file; everything else runs as CommonJS so `require` works.
const isEsm = (code: string) => /^\s*(?:import\s+[\w{*'"]|export\s)/m.test(code)

const files = (language: Language, code: string): { readonly files: Record<string, string>; readonly entry: string; readonly harness: string } => {
  if (language === "python") return { files: { "harness.py": HARNESS_PY, "solution.py": code }, entry: "solution.py", harness: "harness.py" }
  const entry = isEsm(code) ? "solution.mjs" : "solution.js"
  return { files: { "harness.cjs": HARNESS_JS, [entry]: code }, entry, harness: "harness.cjs" }
}

/** The run for `testCase` of a solution `code` in `language`. */
export const job = (language: Language, code: string, testCase: Case): Job => {
  if ("assert" in testCase) {
    const nonce = randomBytes(16).toString("hex")
    const f = files(language, `${code}\n\n${testCase.assert}\n`)
    return {
      program: { language, files: f.files, args: [f.harness, "assert", f.entry], stdin: nonce },
      judge: (o) => o._tag === "Exited" && o.code === 0 && normalize(o.stdout).split("\n").pop() === nonce
    }
  }
  const f = files(language, code)
  const expected = normalize(testCase.stdout)
  return {
    program: { language, files: f.files, args: [f.harness, "io", f.entry], stdin: testCase.stdin ?? "" },
    judge: (o) => o._tag === "Exited" && o.code === 0 && normalize(o.stdout) === expected
  }
}
