/**
 * Reading a metrics JSONL file back: only a torn last line (no trailing newline, or an unparseable final
 * line) is dropped; a bad line anywhere before it is an error naming the file and the line, and the sink
 * then refuses to open the file rather than cut everything after that line away.
 */
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { Metrics } from "../src/index.js"

const file = (text: string) => {
  const path = join(mkdtempSync(join(tmpdir(), "r1flow-jsonl-")), "metrics.jsonl")
  writeFileSync(path, text)
  return path
}

const lines = ['{"step":1,"loss":0.5}', '{"step":2,"loss":0.25}', '{"step":3,"loss":0.125}']

describe("metrics JSONL: torn tail vs. damage", () => {
  it("a torn last line without its newline is dropped, and the sink appends after the whole records", () => {
    const path = file(lines.join("\n") + "\n" + '{"step":4,"lo')
    const { entries, validBytes } = Metrics.readJsonl(path)
    expect(entries.map((e) => e.step)).toEqual([1, 2, 3])
    expect(validBytes).toBe(Buffer.byteLength(lines.join("\n") + "\n"))
    const sink = Metrics.jsonlSink(path)
    sink.write({ step: 4, values: { loss: 0.0625 } })
    sink.close()
    expect(readFileSync(path, "utf8")).toBe([...lines, '{"step":4,"loss":0.0625}'].join("\n") + "\n")
  })

  it("an unparseable final line (newline and all) is dropped as torn", () => {
    const path = file(lines.join("\n") + "\n" + "\u0000\u0000\u0000\n")
    expect(Metrics.readJsonl(path).entries.map((e) => e.step)).toEqual([1, 2, 3])
  })

  it("a bad line before the last is an error naming the file and the line; the sink truncates nothing", () => {
    const text = [lines[0], '{"step":2,"lo{"step":3,"loss":0.125}', lines[2], '{"step":4,"loss":0.0625}'].join("\n") + "\n"
    const path = file(text)
    expect(() => Metrics.readJsonl(path)).toThrow(Metrics.MetricsFileError)
    expect(() => Metrics.readJsonl(path)).toThrow(`${path}:2:`)
    expect(() => Metrics.jsonlSink(path)).toThrow(`${path}:2:`)
    expect(readFileSync(path, "utf8")).toBe(text)
  })

  it("a line that parses but is not a step record is damage too", () => {
    const path = file([lines[0], "[1,2]", lines[1]].join("\n") + "\n")
    expect(() => Metrics.readJsonl(path)).toThrow(`${path}:2: not a metrics record`)
  })
})
