/** What the benches share for timing: the median, and wall plus CPU seconds of one call. */

/** The median (upper middle for an even count). */
export const median = (xs: ReadonlyArray<number>): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

/** Wall and CPU seconds (user + system) of one call. */
export interface Seconds { readonly wall: number; readonly cpu: number }

/** A stopwatch started now: calling it gives the seconds since. */
const start = (): (() => Seconds) => {
  const t0 = performance.now(), c0 = process.cpuUsage()
  return () => {
    const c = process.cpuUsage(c0)
    return { wall: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6 }
  }
}

/** Wall seconds and CPU seconds of one call; on a busy machine the CPU figure is the fairer one. */
export const time = (f: () => void): Seconds => {
  const stop = start()
  f()
  return stop()
}

/** `time` of an async call, awaited (generation and training read their results back asynchronously). */
export const timeAsync = async (f: () => Promise<unknown>): Promise<Seconds> => {
  const stop = start()
  await f()
  return stop()
}
