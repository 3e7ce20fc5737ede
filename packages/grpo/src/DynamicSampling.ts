/**
 * DAPO dynamic sampling (Yu et al. 2025, §3.2): a group whose rewards are all equal has zero advantage
 * everywhere and only dilutes the batch, so it is dropped and more prompts are sampled until the batch
 * holds `targetGroups` groups with non-zero reward variance:
 *
 *   0 < |{o_i | is_equivalent(a, o_i)}| < G
 *
 * (generalised here from accuracy to any reward: the group's finite rewards are not all equal; a group
 * with fewer than two finite rewards is dropped too). `fill` is the loop: it calls `draw` (rollout and
 * rewards of fresh prompts) until the batch is full; `accept` is the decision after each draw: it keeps the
 * informative groups, says whether the batch is full, and fails with `DynamicSamplingError` once `maxDraws`
 * draws did not fill it (DAPO's `max_num_gen_batches`). A full batch is trimmed to exactly `targetGroups`
 * groups, first come first kept.
 */
import { Batch, Columns, Stage } from "@r1flow/core"
import { makeData, RecordBatch, Struct, vectorFromArray, type Data, type Vector } from "apache-arrow"
import { Effect, Schema } from "effect"
import * as Advantages from "./Advantages.js"

/** Dynamic sampling configuration. */
export const Config = Schema.Struct({
  /** Groups (prompts) with non-zero reward variance that make a full batch. */
  targetGroups: Schema.Int.check(Schema.isGreaterThan(0)),
  /** Draws (scored batches) allowed per training step before giving up. */
  maxDraws: Schema.Int.check(Schema.isGreaterThan(0))
})
/** Dynamic sampling configuration. */
export type Config = typeof Config.Type

/** The cap on draws was hit before the batch was full. */
export class DynamicSamplingError extends Schema.TaggedError<DynamicSamplingError>()("DynamicSamplingError", {
  message: Schema.String,
  draws: Schema.Number,
  keptGroups: Schema.Number,
  targetGroups: Schema.Number,
  droppedGroups: Schema.Number
}) {}

/** What has been kept so far in the current step. */
export interface State {
  readonly kept: ReadonlyArray<{ readonly batch: RecordBatch<Batch.ScoredType>; readonly rows: Int32Array }>
  readonly groupIds: ReadonlySet<number>
  readonly draws: number
  readonly droppedGroups: number
}

/** The state at the start of a training step. */
export const empty: State = { kept: [], groupIds: new Set(), draws: 0, droppedGroups: 0 }

/** The decision after one draw. */
export type Decision =
  | { readonly _tag: "Full"; readonly batch: RecordBatch<Batch.ScoredType>; readonly state: State }
  | { readonly _tag: "More"; readonly state: State }

/** Row indices of `groupIds` whose group has non-zero reward variance, and the ids of the dropped groups. */
export const informativeRows = (rewards: Float32Array, groupIds: Int32Array): { readonly rows: Int32Array; readonly dropped: ReadonlyArray<number> } => {
  const dropped = Advantages.compute(rewards, groupIds, { estimator: "grpo", scaling: "none", epsilon: 0 }).zeroStdGroupIds
  const drop = new Set(dropped)
  const rows: Array<number> = []
  for (let i = 0; i < groupIds.length; i++) if (!drop.has(groupIds[i])) rows.push(i)
  return { rows: Int32Array.from(rows), dropped }
}

const NAME = "grpo/dynamic-sampling"

/** Folds one scored draw into `state`: keep informative groups; full, more, or too many draws. */
export const accept = (
  state: State,
  batch: RecordBatch<Batch.ScoredType>,
  config: Config
): Effect.Effect<Decision, DynamicSamplingError | Stage.StageError> =>
  Effect.gen(function*() {
    const checked = yield* Stage.check(NAME, Batch.Scored, batch)
    const groupIds = Columns.int32Values(checked.getChild("group_id")!)
    const rewards = Advantages.rewardValues(checked.getChild("reward")!)
    const { rows, dropped } = informativeRows(rewards, groupIds)
    const ids = new Set(state.groupIds)
    for (const i of rows) {
      const g = groupIds[i]
      if (state.groupIds.has(g)) {
        return yield* new Stage.StageError({ stage: NAME, message: `group id ${g} appears in two draws of one step; group ids must be unique across draws` })
      }
      ids.add(g)
    }
    const next: State = {
      kept: rows.length > 0 ? [...state.kept, { batch: checked, rows }] : state.kept,
      groupIds: ids,
      draws: state.draws + 1,
      droppedGroups: state.droppedGroups + dropped.length
    }
    if (ids.size >= config.targetGroups) {
      const full = yield* Effect.try({
        try: () => concatRows(next.kept, config.targetGroups),
        catch: (cause) => new Stage.StageError({ stage: NAME, message: cause instanceof Error ? cause.message : String(cause), cause })
      })
      return { _tag: "Full", batch: full, state: next } as const
    }
    if (next.draws >= config.maxDraws) {
      return yield* new DynamicSamplingError({
        message: `dynamic sampling: ${next.draws} draws (the cap, maxDraws) gave ${ids.size} of ${config.targetGroups} groups with non-zero reward variance; ` +
          `${next.droppedGroups} groups had equal rewards. Raise maxDraws, lower targetGroups, or turn dynamic sampling off`,
        draws: next.draws,
        keptGroups: ids.size,
        targetGroups: config.targetGroups,
        droppedGroups: next.droppedGroups
      })
    }
    return { _tag: "More", state: next } as const
  })

/** A step's scored batch and, when dynamic sampling is on, the groups it dropped on the way. */
export interface Filled {
  readonly batch: RecordBatch<Batch.ScoredType>
  /** `undefined` when dynamic sampling is off (one draw, nothing dropped or counted). */
  readonly droppedGroups: number | undefined
}

/**
 * The step's scored batch: with `config`, draws (`draw(0)`, `draw(1)`, …) until `targetGroups` informative
 * groups are kept (`accept`); without, the one batch `draw(0)` gives, as it is.
 */
export const fill = <E, R>(
  config: Config | undefined,
  draw: (attempt: number) => Effect.Effect<RecordBatch<Batch.ScoredType>, E, R>
): Effect.Effect<Filled, E | DynamicSamplingError | Stage.StageError, R> =>
  config === undefined
    ? Effect.map(draw(0), (batch) => ({ batch, droppedGroups: undefined }))
    : Effect.gen(function*() {
      let state = empty
      for (let attempt = 0;; attempt++) {
        const decision = yield* accept(state, yield* draw(attempt), config)
        if (decision._tag === "Full") return { batch: decision.batch, droppedGroups: decision.state.droppedGroups }
        state = decision.state
      }
    })

/** `batches` (same columns) as one batch, in order; the schema (and its metadata) of the first. */
export const concat = (batches: ReadonlyArray<RecordBatch<Batch.ScoredType>>): RecordBatch<Batch.ScoredType> =>
  batches.length === 1 ? batches[0] : concatRows(batches.map((batch) => ({ batch, rows: Int32Array.from({ length: batch.numRows }, (_, i) => i) })), Infinity)

/** One batch of the kept rows, keeping only the first `maxGroups` groups; schema of the first batch. */
const concatRows = (kept: State["kept"], maxGroups: number): RecordBatch<Batch.ScoredType> => {
  const schema = kept[0].batch.schema
  for (const { batch } of kept) {
    const problems = Stage.schemaProblems(schema, batch.schema)
    if (problems.length > 0 || batch.schema.fields.length !== schema.fields.length) {
      throw new Error(`draws have different columns: ${problems.join("; ") || "column count differs"}`)
    }
  }
  const groups = new Set<number>()
  const picks: Array<{ batch: RecordBatch; rows: Array<number> }> = []
  for (const { batch, rows } of kept) {
    const groupIds = Columns.int32Values(batch.getChild("group_id")!)
    const take: Array<number> = []
    for (const i of rows) {
      const g = groupIds[i]
      if (!groups.has(g)) {
        if (groups.size >= maxGroups) continue
        groups.add(g)
      }
      take.push(i)
    }
    picks.push({ batch, rows: take })
  }
  const length = picks.reduce((n, p) => n + p.rows.length, 0)
  const children: Array<Data> = schema.fields.map((f) => {
    const values: Array<unknown> = []
    for (const { batch, rows } of picks) {
      const col = batch.getChild(f.name) as Vector
      for (const i of rows) {
        const v = col.get(i)
        // List cells come back as Vectors; the builder wants plain arrays.
        values.push(v !== null && typeof v === "object" && "toArray" in v ? Array.from(v.toArray() as ArrayLike<unknown>) : v)
      }
    }
    return vectorFromArray(values, f.type).data[0]
  })
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length, nullCount: 0, children })) as RecordBatch<Batch.ScoredType>
}
