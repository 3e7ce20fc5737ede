/**
 * A bounded pool: at most `size` sandboxed runs at once; a run that waits longer than `queueTimeoutMs`
 * for a slot fails with `PoolSaturated` (an infrastructure failure, scored NaN) instead of queueing forever.
 */
import { Effect, Option, Schema, Semaphore } from "effect"

/** No slot freed up within the queue timeout. */
export class PoolSaturated extends Schema.TaggedError<PoolSaturated>()("PoolSaturated", {
  message: Schema.String
}) {}

/** A bounded pool of run slots. */
export interface Pool {
  readonly size: number
  readonly queueTimeoutMs: number
  /** Runs `effect` in a slot; fails with `PoolSaturated` when none frees up in time. */
  readonly run: <A, E>(effect: Effect.Effect<A, E>) => Effect.Effect<A, E | PoolSaturated>
}

/** A pool of `size` slots. */
export const make = (size: number, queueTimeoutMs: number): Pool => {
  if (!Number.isInteger(size) || size < 1) throw new RangeError(`pool size must be a positive integer, got ${size}`)
  const slots = Semaphore.makeUnsafe(size)
  return {
    size,
    queueTimeoutMs,
    run: <A, E>(effect: Effect.Effect<A, E>) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(restore(Effect.timeoutOption(slots.take(1), queueTimeoutMs)), (slot): Effect.Effect<A, E | PoolSaturated> =>
          Option.isNone(slot)
            ? Effect.fail(new PoolSaturated({ message: `no sandbox slot freed up within ${queueTimeoutMs} ms (${size} slots, all busy)` }))
            : restore(effect).pipe(Effect.ensuring(slots.release(1)))
        )
      )
  }
}
