/**
 * The non-finite guard: an optimizer step whose loss or gradient norm is NaN or ±∞ is skipped (the
 * weights and optimizer state stay as they were) and counted; after `maxConsecutiveSkips` skips in a
 * row the run stops with a `NonFiniteError` naming the step and the last good step's metrics.
 */
import { Effect, Schema } from "effect"

/** Guard configuration. */
export const Config = Schema.Struct({
  maxConsecutiveSkips: Schema.Int.check(Schema.isGreaterThan(0)).pipe(Schema.withDecodingDefaultKey(Effect.succeed(3)))
})
/** Guard configuration. */
export type Config = typeof Config.Type

/** Too many non-finite steps in a row: the run cannot make progress. */
export class NonFiniteError extends Schema.TaggedError<NonFiniteError>()("NonFiniteError", {
  message: Schema.String,
  step: Schema.Number,
  consecutiveSkips: Schema.Number,
  lastGoodStep: Schema.NullOr(Schema.Number),
  lastGoodMetrics: Schema.Record(Schema.String, Schema.Number)
}) {}

/** A guard's running counts. */
export interface Guard {
  readonly config: Config
  /** Skipped steps in total. */
  readonly skipped: () => number
  /** Skipped steps since the last good one. */
  readonly consecutive: () => number
  /**
   * Judges optimizer step `step` by its loss and gradient norm: `true` to apply it, `false` to skip it;
   * fails when this skip is the `maxConsecutiveSkips`-th in a row.
   */
  readonly check: (step: number, values: { readonly loss: number; readonly gradNorm: number }) => Effect.Effect<boolean, NonFiniteError>
  /** Records the metrics of a step that was applied (quoted by a later `NonFiniteError`). */
  readonly good: (step: number, metrics: Readonly<Record<string, number>>) => void
  /** The running counts, for a checkpoint. */
  readonly exportState: () => State
  /** Puts the counts back from a checkpoint. */
  readonly importState: (state: State) => void
}

/** A guard's counts as a checkpoint stores them. */
export interface State {
  readonly skipped: number
  readonly consecutive: number
  readonly lastGoodStep: number | null
  readonly lastGoodMetrics: Readonly<Record<string, number>>
}

/** A fresh guard. */
export const make = (config: Config): Guard => {
  let skipped = 0
  let consecutive = 0
  let lastGoodStep: number | null = null
  let lastGoodMetrics: Record<string, number> = {}
  return {
    config,
    skipped: () => skipped,
    consecutive: () => consecutive,
    check: (step, { loss, gradNorm }) =>
      Effect.gen(function*() {
        if (Number.isFinite(loss) && Number.isFinite(gradNorm)) {
          consecutive = 0
          return true
        }
        skipped++
        consecutive++
        if (consecutive >= config.maxConsecutiveSkips) {
          const last = lastGoodStep === null
            ? "no step was good before it"
            : `last good step ${lastGoodStep}: ${Object.entries(lastGoodMetrics).map(([k, v]) => `${k}=${v}`).join(", ")}`
          return yield* new NonFiniteError({
            message: `step ${step}: loss ${loss}, grad norm ${gradNorm}; ${consecutive} non-finite steps in a row (limit ${config.maxConsecutiveSkips}); ${last}`,
            step,
            consecutiveSkips: consecutive,
            lastGoodStep,
            lastGoodMetrics
          })
        }
        return false
      }),
    good: (step, metrics) => {
      lastGoodStep = step
      lastGoodMetrics = { ...metrics }
    },
    exportState: () => ({ skipped, consecutive, lastGoodStep, lastGoodMetrics: { ...lastGoodMetrics } }),
    importState: (state) => {
      skipped = state.skipped
      consecutive = state.consecutive
      lastGoodStep = state.lastGoodStep
      lastGoodMetrics = { ...state.lastGoodMetrics }
    }
  }
}
