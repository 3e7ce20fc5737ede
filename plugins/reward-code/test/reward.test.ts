import { chmodSync, mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Conformance, Reward } from "@r1flow/core"
import { Schema } from "effect"
import { describe, expect, test, vi } from "vitest"
import plugin from "../src/index.js"
import * as CodeReward from "../src/CodeReward.js"
import * as Sandbox from "../src/Sandbox.js"
import { answer, probe } from "./helpers.js"

const status = probe()
const available = "sandbox" in status
const config = (raw: unknown = {}) => Schema.decodeUnknownSync(CodeReward.Config)(raw)

// A fake bwrap that fails the way a machine without user namespaces does.
const brokenDir = mkdtempSync(join(tmpdir(), "r1flow-broken-bwrap-"))
chmodSync(brokenDir, 0o755)
const brokenBwrap = join(brokenDir, "bwrap")
writeFileSync(brokenBwrap, "#!/bin/sh\necho 'bwrap: No permissions to creating new namespace, likely because the kernel does not allow non-privileged user namespaces.' >&2\nexit 1\n")
chmodSync(brokenBwrap, 0o755)

describe("refusal (runs with or without bubblewrap)", () => {
  test("the plugin refuses to instantiate when the sandbox cannot be created, and says why", () => {
    if (!available) {
      // Without bwrap the real default config must refuse.
      expect(() => plugin.make(config())).toThrow(/refuses to run/)
      return
    }
    expect(() => CodeReward.make(config(), { bwrap: brokenBwrap })).toThrow(/refuses to run: bubblewrap .* could not run node: .*No permissions to creating new namespace/)
    expect(() => CodeReward.make(config(), { bwrap: "/nonexistent/bwrap" })).toThrow(/refuses to run: `bwrap` at \/nonexistent\/bwrap .*was not found/)
  })
  test("a bad config is a clear error", () => {
    expect(() => config({ scoring: "most" })).toThrow()
    expect(() => config({ limits: { wallMs: -1 } })).toThrow()
  })
})

const fixtures = {
  jsSum: "const [a, b] = require('fs').readFileSync(0, 'utf8').trim().split(/\\s+/).map(Number)\nconsole.log(a + b)",
  jsWrong: "const [a, b] = require('fs').readFileSync(0, 'utf8').trim().split(/\\s+/).map(Number)\nconsole.log(a + b + 1)",
  pySum: "a, b = map(int, input().split())\nprint(a + b)",
  pyAdd: "def add(a, b):\n    return a + b",
  jsAddEsm: "export const unused = 1\nfunction add(a, b) { return a + b }\nglobalThis.add = add"
}
const ioTests = [{ stdin: "1 2\n", stdout: "3\n" }, { stdin: "10 -4", stdout: "6" }, { stdin: "0 0", stdout: "0" }]

describe.skipIf(!available)("scores in the bubblewrap sandbox", () => {
  const sandbox = available ? status.sandbox : (undefined as never)
  const reward = available ? CodeReward.makeWith(config(), sandbox) : (undefined as never)
  const hasPython = available && sandbox.languages.has("python")

  test("correct solutions score 1, wrong ones 0, no code 0, rows without tests NaN", async () => {
    const rows: Array<Conformance.Row> = [
      { completion: answer("javascript", fixtures.jsSum), metadata: { tests: ioTests } },
      { completion: answer("js", fixtures.jsWrong), metadata: { tests: ioTests } },
      { completion: "the answer is 3", metadata: { tests: ioTests } },
      { completion: answer("rust", "fn main() {}"), metadata: { tests: ioTests } },
      { completion: answer("", "console.log(3)"), metadata: { language: "javascript", tests: [{ stdin: "1 2", stdout: "3" }] } },
      { completion: answer("js", fixtures.jsSum), metadata: { language: "python", tests: ioTests } },
      { completion: answer("js", fixtures.jsSum), metadata: { numbers: [1] } },
      { completion: answer("js", "function add(a, b) { return a + b }"), metadata: { tests: [{ assert: "if (add(2, 3) !== 5) throw new Error('no')" }] } },
      { completion: answer("js", fixtures.jsAddEsm), metadata: { tests: [{ assert: "if (add(2, 3) !== 5) throw new Error('no')" }] } }
    ]
    const scores = await Conformance.score(reward, rows)
    expect(scores).toEqual([1, 0, 0, 0, 1, 0, 0, 1, 1].map((v, i) => (i === 6 ? NaN : v)))
  })

  test("fraction and all-or-nothing", async () => {
    const half = "const [a, b] = require('fs').readFileSync(0, 'utf8').trim().split(/\\s+/).map(Number)\nconsole.log(b === 0 ? 0 : a + b === 3 ? 3 : 99)"
    const rows = [{ completion: answer("js", half), metadata: { tests: ioTests } }]
    expect(await Conformance.score(reward, rows)).toEqual([Math.fround(2 / 3)])
    const strict = CodeReward.makeWith(config({ scoring: "all-or-nothing" }), sandbox)
    expect(await Conformance.score(strict, rows)).toEqual([0])
    expect(await Conformance.score(strict, [{ completion: answer("js", fixtures.jsSum), metadata: { tests: ioTests } }])).toEqual([1])
  })

  test.skipIf(!hasPython)("python: stdin/stdout and assertions; sys.exit(0) before the asserts fails", async () => {
    const rows: Array<Conformance.Row> = [
      { completion: answer("python", fixtures.pySum), metadata: { tests: ioTests } },
      { completion: answer("py", fixtures.pyAdd), metadata: { tests: [{ assert: "assert add(1, 2) == 3" }, { assert: "assert add(-1, 1) == 0" }] } },
      { completion: answer("py", "def add(a, b):\n    return a * b"), metadata: { tests: [{ assert: "assert add(1, 2) == 3" }, { assert: "assert add(2, 2) == 4" }] } },
      { completion: answer("py", "import sys\nsys.exit(0)"), metadata: { tests: [{ assert: "assert add(1, 2) == 3" }] } },
      { completion: answer("py", "import os\nos._exit(0)"), metadata: { tests: [{ assert: "assert False" }] } }
    ]
    expect(await Conformance.score(reward, rows)).toEqual([1, 1, 0.5, 0, 0])
  })

  test("a bad test spec in metadata is a clear error naming the row", async () => {
    await expect(Conformance.score(reward, [{ completion: "x", metadata: { tests: [{ stdin: 1 }] } }])).rejects.toThrow(/row 0: bad test cases in metadata: metadata\.tests\[0\]/)
  })

  test("a broken sandbox scores NaN (not 0) and is counted apart from wrong answers", async () => {
    const broken: Sandbox.Sandbox = {
      ...sandbox,
      run: (program, limits) => Sandbox.runWith({ ...sandbox.tools, bwrap: brokenBwrap }, program, limits)
    }
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {})
    const r = CodeReward.makeWith(config(), broken)
    const scores = await Conformance.score(r, [
      { completion: answer("js", fixtures.jsSum), metadata: { tests: ioTests } },
      { completion: "no code", metadata: { tests: ioTests } }
    ])
    expect(scores).toEqual([NaN, 0])
    expect(r.stats()).toMatchObject({ sandboxErrors: 3, infraNanRows: 1, noCodeRows: 1, passed: 0, failed: 0 })
    expect(r.stats().lastInfraError).toMatch(/never started: .*No permissions to creating new namespace/)
    expect(warn.mock.calls.some((c) => /1 row\(s\) NaN from infrastructure failures/.test(String(c[0])))).toBe(true)
    warn.mockRestore()
  })

  test("a saturated pool scores NaN", async () => {
    const slow = CodeReward.makeWith(config({ concurrency: 1, queueTimeoutMs: 50 }), sandbox)
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {})
    const rows = [0, 1, 2].map((i) => ({ completion: answer("js", `console.log(${i})`), metadata: { tests: [{ stdout: String(i) }] } }))
    const scores = await Conformance.score(slow, rows)
    warn.mockRestore()
    expect(scores[0]).toBe(1)
    expect(scores.slice(1).every(Number.isNaN)).toBe(true)
    expect(slow.stats().saturated).toBe(2)
  })

  test("identical runs in a batch run once", async () => {
    const r = CodeReward.makeWith(config(), sandbox)
    const row = { completion: answer("js", fixtures.jsSum), metadata: { tests: ioTests } }
    expect(await Conformance.score(r, [row, row, row, row])).toEqual([1, 1, 1, 1])
    expect(r.stats().runs).toBe(3)
  })

  test("the abort signal stops the runs", async () => {
    const controller = new AbortController()
    const input = Reward.withSignal(Reward.inputFromBatch(Conformance.makeBatch([{ completion: answer("js", "setInterval(() => {}, 1000)"), metadata: { tests: [{ stdout: "" }] } }])), controller.signal)
    const t = performance.now()
    setTimeout(() => controller.abort(), 300)
    await expect(reward.score(input)).rejects.toThrow()
    expect(performance.now() - t).toBeLessThan(3_000)
  })

  test("conformance", async () => {
    const sampleRows: Array<Conformance.Row> = [
      { completion: answer("js", fixtures.jsSum), metadata: { tests: ioTests } },
      { completion: answer("js", fixtures.jsWrong), metadata: { tests: ioTests }, groupId: 0 },
      ...Conformance.sampleRows
    ]
    for (const r of await Conformance.run(plugin, { sampleRows })) expect(r.ok, `${r.check}: ${r.detail}`).toBe(true)
  })
})

describe.skipIf(!available)("unsandboxed mode", () => {
  test("runs with rlimits only and warns on every call", async () => {
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {})
    const r = CodeReward.make(config({ sandbox: "unsandboxed" }))
    const row = { completion: answer("js", fixtures.jsSum), metadata: { tests: ioTests } }
    expect(await Conformance.score(r, [row])).toEqual([1])
    expect(await Conformance.score(r, [{ completion: answer("js", "while (true) {}"), metadata: { tests: [{ stdout: "" }] } }])).toEqual([0])
    expect(warn.mock.calls.filter((c) => c[0] === CodeReward.UNSANDBOXED_WARNING).length).toBe(3)
    warn.mockRestore()
  })
})

