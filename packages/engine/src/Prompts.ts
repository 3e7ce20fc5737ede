/**
 * Task rows → `Batch.Prompts`: the R1 template applied and tokenized, one group id per prompt.
 */
import { Batch, Columns, Rng } from "@r1flow/core"
import type { Task } from "@r1flow/datasets"
import type { RecordBatch } from "apache-arrow"
import type { RunContext } from "./Context.js"

/** A prompts batch for `rows`, group ids numbered from `firstGroup`. */
export const batch = (ctx: Pick<RunContext, "promptIds">, rows: ReadonlyArray<Task.Row>, firstGroup = 0): RecordBatch<Batch.PromptsType> =>
  Batch.fromData(Batch.Prompts, {
    id: Columns.makeUtf8(rows.map((r) => r.id)),
    group_id: Columns.makeInt32(Int32Array.from(rows, (_, i) => firstGroup + i)),
    prompt: Columns.makeUtf8(rows.map((r) => r.question)),
    prompt_ids: Columns.int32ListFromRows(rows.map((r) => ctx.promptIds(r.question))),
    answer: Columns.makeUtf8(rows.map((r) => r.answer)),
    metadata: Columns.makeUtf8(rows.map((r) => JSON.stringify(r.metadata)))
  })

/**
 * Draws rows in epochs, each epoch a fresh permutation derived from `(seed, name, epoch)`.
 * The position is just a cursor, so resuming needs only the cursor to draw the very same rows.
 */
export const sampler = <A>(rows: ReadonlyArray<A>, seed: number, name: string) => {
  let epoch = -1
  let order: Array<number> = []
  return (cursor: number, count: number): Array<A> => {
    if (rows.length === 0) throw new Error(`no rows to draw from for ${name}`)
    const out: Array<A> = []
    for (let c = cursor; c < cursor + count; c++) {
      const e = Math.floor(c / rows.length)
      if (e !== epoch) {
        epoch = e
        order = Rng.make(seed, `${name}/epoch-${e}`).shuffle(Array.from(rows, (_, j) => j))
      }
      out.push(rows[order[c % rows.length]])
    }
    return out
  }
}
