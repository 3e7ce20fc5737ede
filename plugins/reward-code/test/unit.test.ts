import { Effect } from "effect"
import { describe, expect, test } from "vitest"
import * as Cases from "../src/Cases.js"
import * as Extract from "../src/Extract.js"
import * as Pool from "../src/Pool.js"

describe("Extract.lastBlock", () => {
  test("takes the last fenced block and its tag", () => {
    const text = "scratch:\n```python\nprint(1)\n```\nfinal:\n```js\nconsole.log(2)\n```\ndone"
    expect(Extract.lastBlock(text)).toEqual({ tag: "js", code: "console.log(2)" })
  })
  test("untagged, tilde, longer fences and an unclosed last fence", () => {
    expect(Extract.lastBlock("```\nx = 1\n```")).toEqual({ tag: "", code: "x = 1" })
    expect(Extract.lastBlock("~~~Python\nprint(1)\n~~~")).toEqual({ tag: "python", code: "print(1)" })
    expect(Extract.lastBlock("````js\nconst s = \"```\"\n````")).toEqual({ tag: "js", code: "const s = \"```\"" })
    expect(Extract.lastBlock("```py\nprint(3)")).toEqual({ tag: "py", code: "print(3)" })
    expect(Extract.lastBlock("no code here")).toBeUndefined()
  })
  test("maps tags to languages", () => {
    expect(Extract.languageOfTag("py")).toBe("python")
    expect(Extract.languageOfTag("javascript")).toBe("javascript")
    expect(Extract.languageOfTag("rust")).toBeUndefined()
    expect(Extract.languageOfTag("")).toBeUndefined()
  })
  test("a 1 MB adversarial completion is scanned quickly", () => {
    const text = "```js\n".repeat(100_000) + "x".repeat(400_000)
    const t = performance.now()
    Extract.lastBlock(text)
    expect(performance.now() - t).toBeLessThan(2_000)
  })
})

describe("Cases", () => {
  test("normalize ignores line endings and trailing whitespace only", () => {
    expect(Cases.normalize("3 \r\n4\n\n")).toBe("3\n4")
    expect(Cases.normalize(" 3")).not.toBe(Cases.normalize("3"))
  })
  test("an input/output case passes on exit 0 with matching stdout", () => {
    const j = Cases.job("javascript", "console.log(1)", { stdin: "", stdout: "1\n" })
    expect(j.program.args).toEqual(["harness.cjs", "io", "solution.js"])
    const o = { stderr: "", wallMs: 1 }
    expect(j.judge({ _tag: "Exited", code: 0, stdout: "1\n", ...o })).toBe(true)
    expect(j.judge({ _tag: "Exited", code: 1, stdout: "1\n", ...o })).toBe(false)
    expect(j.judge({ _tag: "TimedOut", stdout: "1\n", ...o })).toBe(false)
  })
  test("an assertion case needs the harness nonce as the last line", () => {
    const j = Cases.job("python", "def f(): return 1", { assert: "assert f() == 1" })
    const nonce = j.program.stdin
    expect(nonce).toMatch(/^[0-9a-f]{32}$/)
    expect(j.program.files["solution.py"]).toContain("assert f() == 1")
    const o = { stderr: "", wallMs: 1 }
    expect(j.judge({ _tag: "Exited", code: 0, stdout: `hi\n${nonce}\n`, ...o })).toBe(true)
    expect(j.judge({ _tag: "Exited", code: 0, stdout: "hi\n", ...o })).toBe(false)
    expect(Cases.job("python", "x", { assert: "y" }).program.stdin).not.toBe(nonce)
  })
  test("ES module code gets an .mjs file", () => {
    expect(Object.keys(Cases.job("javascript", "import fs from 'node:fs'\n", { stdout: "" }).program.files)).toContain("solution.mjs")
  })
})

describe("Pool", () => {
  test("runs at most `size` at once", async () => {
    const pool = Pool.make(2, 10_000)
    let running = 0, peak = 0
    const task = Effect.gen(function*() {
      running++
      peak = Math.max(peak, running)
      yield* Effect.sleep(20)
      running--
    })
    await Effect.runPromise(Effect.forEach(Array.from({ length: 8 }), () => pool.run(task), { concurrency: "unbounded" }))
    expect(peak).toBe(2)
  })
  test("a run waiting past the queue timeout fails with PoolSaturated, and the slot is not leaked", async () => {
    const pool = Pool.make(1, 50)
    const results = await Effect.runPromise(
      Effect.forEach([300, 1], (ms) => Effect.result(pool.run(Effect.as(Effect.sleep(ms), ms))), { concurrency: "unbounded" })
    )
    expect(results[0]._tag).toBe("Success")
    expect(results[1]._tag === "Failure" && results[1].failure._tag).toBe("PoolSaturated")
    expect(await Effect.runPromise(pool.run(Effect.succeed(7)))).toBe(7)
  })
})
