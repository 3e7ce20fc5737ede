import { Effect } from "effect"

/** Runs an effect to its value. */
export const run = <A, E>(effect: Effect.Effect<A, E>): Promise<A> => Effect.runPromise(effect)
/** Runs an effect that must fail and returns its error. */
export const runFail = <A, E>(effect: Effect.Effect<A, E>): Promise<E> => Effect.runPromise(Effect.flip(effect))
