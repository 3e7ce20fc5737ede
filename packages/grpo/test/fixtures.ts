import { Batch, Columns } from "@r1flow/core"

/** A scored batch with the given rewards and group ids (one-token completions, finish reason `stop`). */
export const scored = (rewards: Float32Array, groupIds: Int32Array) => {
  const n = rewards.length
  const strs = (p: string) => Array.from({ length: n }, (_, i) => `${p}${i}`)
  return Batch.fromData(Batch.Scored, {
    id: Columns.makeUtf8(strs("id")),
    group_id: Columns.makeInt32(groupIds),
    prompt: Columns.makeUtf8(strs("p")),
    prompt_ids: Columns.int32ListFromRows(Array.from({ length: n }, (_, i) => [1, i])),
    answer: Columns.makeUtf8(strs("a")),
    metadata: Columns.makeUtf8(strs("").map(() => "{}")),
    completion: Columns.makeUtf8(strs("c")),
    completion_ids: Columns.int32ListFromRows(Array.from({ length: n }, (_, i) => [3, i])),
    logprobs: Columns.float32ListFromRows(Array.from({ length: n }, () => [-1, -2])),
    finish_reason: Columns.makeUtf8(strs("").map(() => "stop")),
    prompt_length: Columns.makeInt32(new Int32Array(n).fill(2)),
    completion_length: Columns.makeInt32(new Int32Array(n).fill(2)),
    reward: Columns.makeFloat32(rewards)
  })
}
