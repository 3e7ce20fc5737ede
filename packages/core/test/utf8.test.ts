import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Result } from "effect"
import { describe, expect, it } from "vitest"
import { Config, Utf8 } from "../src/index.js"
import { runFail } from "./helpers.js"

const enc = new TextEncoder()
const bytes = (...parts: Array<string | number>) => Buffer.concat(parts.map((p) => (typeof p === "string" ? enc.encode(p) : Buffer.from([p]))))

describe("Utf8", () => {
  it("finds the line and byte of the first invalid sequence, including a cut character at the end", () => {
    expect(Utf8.findInvalid(bytes("ok\nstill ok é\n"))).toBeUndefined()
    expect(Utf8.findInvalid(bytes("ok\nab", 0xe9, "cd\n"))).toEqual({ line: 2, byte: 3 })
    expect(Utf8.findInvalid(bytes("é", 0xc3))).toEqual({ line: 1, byte: 3 })
    expect(Utf8.findInvalid(bytes("x", 0xed, 0xa0, 0x80))).toEqual({ line: 1, byte: 2 }) // a lone surrogate
  })

  it("decodes strictly, never substituting U+FFFD", () => {
    expect(Utf8.decode(bytes(0xef, 0xbb, 0xbf, "héllo"))).toEqual(Result.succeed("héllo"))
    const bad = Utf8.decode(bytes("a\nb", 0xff))
    expect(Result.isFailure(bad) && bad.failure).toMatch(/^line 2, byte 2: invalid UTF-8 \(0xFF\)/)
  })

  it("splits lines, failing only the lines at fault", () => {
    const lines = Utf8.lines(bytes("one\r\ntw", 0xe9, "\nthree"))
    expect(lines.map((l) => (Result.isSuccess(l) ? l.success : `!${l.failure}`))).toEqual(["one", "!byte 3: invalid UTF-8 (0xE9); the file must be UTF-8 text", "three"])
    expect(Utf8.lines(bytes("a\r\nb\n"))).toEqual([Result.succeed("a"), Result.succeed("b"), Result.succeed("")])
  })
})

describe("Config.readJson on a file that is not UTF-8", () => {
  it("fails naming the file, line and byte instead of reading U+FFFD into a string value", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "r1flow-utf8-")), "recipe.json")
    writeFileSync(file, bytes('{\n  "name": "caf', 0xe9, '"\n}\n'))
    const err = await runFail(Config.readJson(file))
    expect(err).toMatchObject({ _tag: "ConfigError", source: file })
    expect(err.message).toMatch(/line 2, byte 15: invalid UTF-8/)
  })
})
