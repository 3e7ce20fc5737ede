/**
 * Seeded, splittable random numbers whose state can be saved and restored exactly.
 *
 * Each consumer (rollout sampling, data order, initialisation, …) draws from its own named stream,
 * derived from the run seed and the stream's name, so adding draws in one stage never shifts
 * another stage's numbers. The generator is xoshiro128** (32-bit state words, exact in JS numbers);
 * streams are seeded through SplitMix32 of an FNV-1a hash of `seed/name`.
 */
import { Context, Effect, Layer, Schema } from "effect"

/** A stream's full state: four unsigned 32-bit words. Restoring it replays the same draws. */
export type State = readonly [number, number, number, number]

/** A single deterministic random stream. Not thread-safe; one owner at a time. */
export interface Stream {
  readonly name: string
  /** Uniform unsigned 32-bit integer. */
  nextU32(): number
  /** Uniform float in [0, 1) with 53 random bits. */
  nextFloat(): number
  /** Uniform integer in [0, n). */
  nextInt(n: number): number
  /** Standard normal (Box–Muller; no cached second value, so state is just the four words). */
  normal(): number
  /** In-place Fisher–Yates shuffle. */
  shuffle<A>(items: Array<A>): Array<A>
  /** Copy of the current state. */
  state(): State
  /** Replace the state (from `state()`). */
  restore(state: State): void
  /** An independent child stream, derived from this stream's name (not its position). */
  split(child: string): Stream
}

/** FNV-1a 32-bit hash of a string: stable across runs and platforms (stream seeding, hash splits). */
export const hash = (text: string): number => {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h >>> 0
}

const splitMix32 = (seed: number) => {
  let s = seed >>> 0
  return () => {
    s = (s + 0x9e3779b9) >>> 0
    let z = s
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0
    return (z ^ (z >>> 16)) >>> 0
  }
}

const rotl = (x: number, k: number) => ((x << k) | (x >>> (32 - k))) >>> 0

/** Makes the stream `name` of the run seeded with `seed`. Same (seed, name) → same draws. */
export const make = (seed: number, name: string): Stream => {
  if (!Number.isSafeInteger(seed)) throw new RangeError(`Rng seed must be a safe integer, got ${seed}`)
  const key = `${seed}/${name}`
  const sm = splitMix32(hash(key) ^ (seed >>> 0) ^ Math.floor(seed / 2 ** 32))
  const s = new Uint32Array([sm(), sm(), sm(), sm()])
  if ((s[0] | s[1] | s[2] | s[3]) === 0) s[0] = 1
  const nextU32 = () => {
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0
    const t = (s[1] << 9) >>> 0
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = rotl(s[3], 11)
    return result
  }
  const nextFloat = () => ((nextU32() >>> 5) * 67108864 + (nextU32() >>> 6)) / 9007199254740992
  const stream: Stream = {
    name,
    nextU32,
    nextFloat,
    nextInt: (n) => {
      if (!(n > 0) || !Number.isInteger(n)) throw new RangeError(`nextInt needs a positive integer, got ${n}`)
      return Math.floor(nextFloat() * n)
    },
    normal: () => {
      let u = nextFloat()
      while (u === 0) u = nextFloat()
      const v = nextFloat()
      return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v)
    },
    shuffle: (items) => {
      for (let i = items.length - 1; i > 0; i--) {
        const j = Math.floor(nextFloat() * (i + 1))
        const tmp = items[i]
        items[i] = items[j]
        items[j] = tmp
      }
      return items
    },
    state: () => [s[0], s[1], s[2], s[3]],
    restore: (state) => {
      if (state.length !== 4 || state.some((w) => !Number.isInteger(w) || w < 0 || w > 0xffffffff)) {
        throw new RangeError(`Rng state for stream "${name}" must be four uint32 words`)
      }
      s.set(state)
    },
    split: (child) => make(seed, `${name}/${child}`)
  }
  return stream
}

/** Saved states of every stream a run has opened, by stream name. */
export const Snapshot = Schema.Struct({
  seed: Schema.Number,
  streams: Schema.Record(Schema.String, Schema.Tuple([Schema.Number, Schema.Number, Schema.Number, Schema.Number]))
})
/** Saved states of every stream a run has opened. */
export type Snapshot = typeof Snapshot.Type

/** The run's random streams: one per name, created on first use, all captured by `snapshot`. */
export class Rng extends Context.Service<Rng, {
  readonly seed: number
  /** The stream called `name` (created on first use, then the same object). */
  stream(name: string): Stream
  /** Every opened stream's state, for a checkpoint. */
  snapshot(): Snapshot
  /** Puts every stream back where `snapshot` found it. */
  restore(snapshot: Snapshot): Effect.Effect<void, RngRestoreError>
}>()("@r1flow/core/Rng") {}

/** A snapshot that cannot be applied (different seed or malformed state). */
export class RngRestoreError extends Schema.TaggedError<RngRestoreError>()("RngRestoreError", {
  message: Schema.String
}) {}

/** Builds the service for `seed` (plain function, for code outside Effect). */
export const makeService = (seed: number): Rng["Service"] => {
  const streams = new Map<string, Stream>()
  const stream = (name: string) => {
    let s = streams.get(name)
    if (s === undefined) {
      s = make(seed, name)
      streams.set(name, s)
    }
    return s
  }
  return Rng.of({
    seed,
    stream,
    snapshot: () => ({ seed, streams: Object.fromEntries([...streams].map(([k, v]) => [k, [...v.state()] as [number, number, number, number]])) }),
    restore: (snap) =>
      Effect.gen(function*() {
        if (snap.seed !== seed) {
          return yield* new RngRestoreError({ message: `snapshot was taken with seed ${snap.seed}, this run has seed ${seed}` })
        }
        for (const [name, st] of Object.entries(snap.streams)) {
          const r = yield* Effect.try({
            try: () => stream(name).restore(st),
            catch: (e) => new RngRestoreError({ message: `stream "${name}": ${String(e)}` })
          })
          void r
        }
      })
  })
}

/** The RNG service for a run seed. */
export const layer = (seed: number): Layer.Layer<Rng> => Layer.succeed(Rng, makeService(seed))
