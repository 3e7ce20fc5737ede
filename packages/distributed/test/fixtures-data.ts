/** Test data: prompt batches and a deterministic fake draw (no vitest, so a child process can use it). */
import { Batch, Columns } from "@r1flow/core"
import type { RecordBatch } from "apache-arrow"

const lcg = (seed: number) => {
  let s = seed >>> 0
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    return s
  }
}

/** A prompts batch of one group: `rows` prompts of `promptLength` tokens each. */
export const prompts = (groupId: number, rows = 2, promptLength = 8): RecordBatch<Batch.PromptsType> => {
  const next = lcg(groupId + 1)
  const ids = Array.from({ length: rows }, () => Array.from({ length: promptLength }, () => next() % 50_000))
  return Batch.fromData(Batch.Prompts, {
    id: Columns.makeUtf8(ids.map((_, i) => `p${groupId}-${i}`)),
    group_id: Columns.makeInt32(new Int32Array(rows).fill(groupId)),
    prompt: Columns.makeUtf8(ids.map((_, i) => `question ${groupId}.${i}`)),
    prompt_ids: Columns.int32ListFromRows(ids),
    answer: Columns.makeUtf8(ids.map(() => "42")),
    metadata: Columns.makeUtf8(ids.map(() => "{}"))
  })
}

/**
 * A deterministic stand-in for generation and scoring: completions and rewards are functions of the
 * prompts, the group's seed and the policy version only, so any worker produces the same result.
 */
export const fakeDraw = (p: RecordBatch<Batch.PromptsType>, meta: { readonly policyVersion: number; readonly seed: number; readonly groupId: number }): RecordBatch<Batch.ScoredType> => {
  const next = lcg(meta.seed ^ (meta.policyVersion * 7919))
  const n = p.numRows
  const completions = Array.from({ length: n }, () => Array.from({ length: 4 }, () => next() % 50_000))
  const str = (name: "id" | "prompt" | "answer" | "metadata") => p.getChild(name)!.toArray() as unknown as Array<string>
  return Batch.fromData(Batch.Scored, {
    id: Columns.makeUtf8(str("id")),
    group_id: p.getChild("group_id")!.data[0],
    prompt: Columns.makeUtf8(str("prompt")),
    prompt_ids: p.getChild("prompt_ids")!.data[0],
    answer: Columns.makeUtf8(str("answer")),
    metadata: Columns.makeUtf8(str("metadata")),
    completion: Columns.makeUtf8(completions.map((c) => c.join(" "))),
    completion_ids: Columns.int32ListFromRows(completions),
    logprobs: Columns.float32ListFromRows(completions.map((c) => c.map((t) => -(t % 97) / 10))),
    finish_reason: Columns.makeUtf8(completions.map(() => "stop")),
    prompt_length: Columns.makeInt32(new Int32Array(n).fill(p.getChild("prompt_ids")!.get(0)!.length)),
    completion_length: Columns.makeInt32(new Int32Array(n).fill(4)),
    reward: Columns.makeFloat32(Float32Array.from(completions, (c) => (c[0] % 2) + meta.policyVersion))
  })
}
