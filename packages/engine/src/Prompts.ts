/**
 * Task rows → `Batch.Prompts`: the R1 template applied and tokenized, one group id per prompt; and the
 * deterministic, resumable draws of train rows (`sampler`, and `taskSampler` for a mixture).
 *
 * A mixture's draw at cursor position c picks task k with probability w_k / Σ_j w_j, from a uniform u_c
 * that is a pure function of (seed, name, c) (block ⌊c / 256⌋'s stream, draw c mod 256):
 *
 *   task(c) = min { k : Σ_{j ≤ k} w_j > u_c · Σ_j w_j }
 *
 * and then takes that task's next row from its own epoch permutations (`sampler` over its rows), at its
 * own cursor n_k(c) = #{ c' < c : task(c') = k }. So resuming at cursor c draws the very same rows.
 */
import { Batch, Columns, Rng } from "@r1flow/core"
import type { Task } from "@r1flow/datasets"
import type { RecordBatch } from "apache-arrow"
import type { RunContext } from "./Context.js"
import * as Recipe from "./Recipe.js"

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

/** Positions per block of the mixture's schedule: one stream per block, not one per position. */
const BLOCK = 256

/**
 * The weighted, resumable draw over several tasks' rows (see the module doc): `(cursor, count)` as `sampler`.
 * `parts` are the tasks in order, each with its rows and weight (> 0).
 */
export const mixtureSampler = <A>(parts: ReadonlyArray<{ readonly name: string; readonly weight: number; readonly rows: ReadonlyArray<A> }>, seed: number, name: string) => {
  const total = parts.reduce((a, p) => a + p.weight, 0)
  const draws = parts.map((p) => sampler(p.rows, seed, `${name}/${p.name}`))
  let block = -1
  let us: Array<number> = []
  const taskAt = (c: number): number => {
    const b = Math.floor(c / BLOCK)
    if (b !== block) {
      const rng = Rng.make(seed, `${name}/mix/block-${b}`)
      us = Array.from({ length: BLOCK }, () => rng.nextFloat())
      block = b
    }
    const target = us[c % BLOCK] * total
    let acc = 0
    for (let k = 0; k < parts.length; k++) {
      acc += parts[k].weight
      if (target < acc) return k
    }
    return parts.length - 1
  }
  // Each task's cursor at position `at`, kept so that drawing on from where the last call stopped is O(count).
  let at = 0
  let cursors = parts.map(() => 0)
  return (cursor: number, count: number): Array<A> => {
    if (cursor < at) {
      at = 0
      cursors = parts.map(() => 0)
    }
    for (; at < cursor; at++) cursors[taskAt(at)]++
    const out: Array<A> = []
    for (; at < cursor + count; at++) {
      const k = taskAt(at)
      out.push(draws[k](cursors[k], 1)[0])
      cursors[k]++
    }
    return out
  }
}

/**
 * The train draw of the recipe's `task`: a single task draws exactly as `sampler(rows, seed, name)`; a
 * mixture splits `rows` by `metadata.task` and draws by weight (`mixtureSampler`). Throws naming the task
 * when one of the mixture's tasks has no row in `rows`.
 */
export const taskSampler = (task: Recipe.Task, rows: ReadonlyArray<Task.Row>, seed: number, name: string): ((cursor: number, count: number) => Array<Task.Row>) => {
  if (task.kind !== "mixture") return sampler(rows, seed, name)
  const parts = Recipe.tasksOf(task).map((t) => {
    const own = rows.filter((r) => r.metadata.task === t.name)
    if (own.length === 0) throw new Error(`no rows of task "${t.name}" to draw from for ${name}`)
    return { name: t.name, weight: t.weight, rows: own }
  })
  return mixtureSampler(parts, seed, name)
}
