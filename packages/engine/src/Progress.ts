/**
 * Progress lines for long stages: step, the metrics that matter, throughput and an ETA.
 */

const duration = (s: number) => (s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m` : s >= 60 ? `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, "0")}s` : `${s.toFixed(0)}s`)

const num = (v: number) => (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(3) : v.toFixed(4))

/** A reporter for a stage of `total` steps starting at `first`; call it after each step. */
export const reporter = (label: string, total: number, first: number, log: (line: string) => void, every: number) => {
  const t0 = performance.now()
  return (step: number, shown: ReadonlyArray<[string, number | undefined]>, tokens?: number): void => {
    const done = step + 1
    if (done % every !== 0 && done !== total) return
    const elapsed = (performance.now() - t0) / 1000
    const rate = (done - first) / Math.max(elapsed, 1e-9)
    const eta = rate > 0 ? (total - done) / rate : 0
    const parts = shown.filter(([, v]) => v !== undefined && Number.isFinite(v)).map(([k, v]) => `${k} ${num(v!)}`)
    const tps = tokens !== undefined && elapsed > 0 ? `  ${Math.round(tokens / elapsed).toLocaleString("en-US")} tok/s` : ""
    log(`[${label}] step ${done}/${total}  ${parts.join("  ")}${tps}  ETA ${duration(eta)}`)
  }
}
