import { Utf8 } from "apache-arrow"
import { describe, expect, it } from "vitest"
import { Task } from "../src/index.js"

describe("Task", () => {
  it("exports the task-rows schema", () => {
    expect(Task.Rows.fields.map((f) => [f.name, f.type instanceof Utf8, f.nullable])).toEqual([
      ["id", true, false],
      ["prompt", true, false],
      ["answer", true, false],
      ["metadata", true, false]
    ])
    expect(Task.Rows.metadata.get("r1flow.schema")).toBe("task-rows")
    expect(Task.Rows.metadata.get("r1flow.schema_version")).toBe("1")
  })

  it("builds a batch whose columns read back as the rows", () => {
    const rows: Array<Task.Row> = [
      { id: "x/1", question: "What is 1 + 2?", answer: "3", metadata: { a: 1, b: 2, op: "+", digits: 1 } },
      { id: "x/2", question: "Über 5 − 2? ✓", answer: "3", metadata: { numbers: [5, 2], target: 3 } },
      { id: "x/3", question: "", answer: "", metadata: {} }
    ]
    const batch = Task.toBatch(rows)
    expect(batch.schema.fields.map((f) => f.name)).toEqual(Task.Rows.fields.map((f) => f.name))
    expect(batch.schema.metadata.get("r1flow.schema")).toBe("task-rows")
    expect(batch.numRows).toBe(3)
    rows.forEach((r, i) => {
      const got = batch.get(i)!.toJSON()
      expect({ id: got.id, question: got.prompt, answer: got.answer, metadata: JSON.parse(got.metadata) }).toEqual(r)
    })
    expect(Task.toBatch([]).numRows).toBe(0)
  })

  it("holds out about a tenth of problems, by their text alone", () => {
    let test = 0
    const n = 100_000
    for (let i = 0; i < n; i++) if (Task.splitOf(`${i}+${i * 7 + 3}`) === "test") test++
    expect(test / n).toBeGreaterThan(Task.HELD_OUT_FRACTION - 0.005)
    expect(test / n).toBeLessThan(Task.HELD_OUT_FRACTION + 0.005)
    expect(Task.splitOf("12+345")).toBe(Task.splitOf("12+345"))
  })
})
