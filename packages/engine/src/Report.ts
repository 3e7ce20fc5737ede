/**
 * `report.html`: one self-contained page (inline SVG, no scripts from anywhere, no network) with the
 * curves a reader of an R1 run looks at first (reward, held-out accuracy, completion length — the
 * "response grows" curve —, KL, entropy, clip ratio, learning rate) and sample completions per evaluation.
 */
import type { Metrics } from "@r1flow/core"

/** One task's share of an evaluation over a mixture: the same rates over that task's problems only. */
export interface TaskEval {
  readonly problems: number
  readonly accuracy: number
  readonly consAccuracy: number
  readonly formatRate: number
  readonly meanLength: number
  /** Mean language consistency over the completions whose chain of thought has words; absent when none has. */
  readonly languageConsistency?: number
}

/** One evaluation, as the eval stage writes it to `evals/<name>.json`. */
export interface EvalRecord {
  readonly name: string
  readonly step: number
  readonly accuracy: number
  readonly formatRate: number
  readonly meanLength: number
  /** As `TaskEval.languageConsistency`, over all problems. */
  readonly languageConsistency?: number
  readonly samples: ReadonlyArray<{ readonly prompt: string; readonly completion: string; readonly answer: string; readonly reward: number }>
  /** Per task, when the recipe has more than one (a mixture); absent otherwise. */
  readonly tasks?: Readonly<Record<string, TaskEval>>
  readonly [k: string]: unknown
}

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!)

const palette = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4d7c0f"]

/** An SVG line chart of several series over steps. */
export const chart = (title: string, series: ReadonlyArray<{ name: string; points: ReadonlyArray<[number, number]> }>): string => {
  const pts = series.flatMap((s) => s.points).filter(([, y]) => Number.isFinite(y))
  if (pts.length === 0) return ""
  const W = 460, H = 230, L = 50, R = 10, T = 38, B = 30
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1])
  const x0 = Math.min(...xs)
  let [x1, y0, y1] = [Math.max(...xs), Math.min(...ys), Math.max(...ys)]
  if (x0 === x1) x1 = x0 + 1
  if (y0 === y1) {
    const pad = Math.abs(y0) > 0 ? Math.abs(y0) * 0.1 : 1
    y0 -= pad
    y1 += pad
  }
  const sx = (x: number) => L + ((x - x0) / (x1 - x0)) * (W - L - R)
  const sy = (y: number) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B)
  const ticks = [y0, (y0 + y1) / 2, y1]
  const lines = series.map((s, i) => {
    const p = s.points.filter(([, y]) => Number.isFinite(y)).map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ")
    const c = palette[i % palette.length]
    const dot = s.points.length === 1 ? `<circle cx="${sx(s.points[0][0])}" cy="${sy(s.points[0][1])}" r="3" fill="${c}"/>` : ""
    return `<polyline fill="none" stroke="${c}" stroke-width="1.8" points="${p}"/>${dot}`
  })
  const legend = series.map((s, i) => `<tspan fill="${palette[i % palette.length]}">■ ${esc(s.name)}</tspan>`).join(" ")
  return `<figure><svg viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(title)}">
<text x="${L}" y="16" font-size="13" font-weight="600">${esc(title)}</text>
<text x="${L}" y="30" font-size="10">${legend}</text>
<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#999"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#999"/>
${ticks.map((t) => `<text x="${L - 4}" y="${sy(t) + 3}" font-size="10" text-anchor="end">${Number(t.toPrecision(3))}</text>`).join("")}
<text x="${L}" y="${H - 12}" font-size="10">${x0}</text><text x="${W - R}" y="${H - 12}" font-size="10" text-anchor="end">step ${x1}</text>
${lines.join("\n")}
</svg></figure>`
}

const seriesOf = (entries: ReadonlyArray<Metrics.Entry>, key: string, label = key) => ({
  name: label,
  points: entries.filter((e) => key in e.values).map((e) => [e.step, e.values[key]] as [number, number])
})

/** The report page for a run's metrics and evaluations. */
export const render = (input: {
  readonly title: string
  readonly manifest: Record<string, unknown>
  readonly metrics: ReadonlyArray<Metrics.Entry>
  readonly evals: ReadonlyArray<EvalRecord>
}): string => {
  const m = input.metrics
  const keys = [...new Set(m.flatMap((e) => Object.keys(e.values)))]
  const rewardKeys = keys.filter((k) => /^rewards\/.+\/mean$/.test(k))
  const pick = (ks: ReadonlyArray<string>) => ks.filter((k) => keys.includes(k)).map((k) => seriesOf(m, k))
  const charts = [
    chart("reward", [...pick(["reward"]), ...rewardKeys.map((k) => seriesOf(m, k, k.slice(8, -5)))]),
    chart("held-out accuracy", [{ name: "pass@1", points: input.evals.map((e) => [e.step, e.accuracy] as [number, number]) }]),
    chart("completion length (tokens)", pick(["completions/mean_length", "completions/max_length", "completions/min_length"])),
    chart("KL to reference", pick(["kl"])),
    chart("entropy", pick(["entropy"])),
    chart("clip ratio", pick(["clip_ratio/region_mean", "clip_ratio/low_mean", "clip_ratio/high_mean"])),
    chart("learning rate", pick(["learning_rate"])),
    chart("loss", pick(["loss"]))
  ].filter((c) => c !== "")
  const row = (name: string, step: number, e: { readonly accuracy: number; readonly formatRate: number; readonly meanLength: number; readonly languageConsistency?: number }) =>
    `<tr><td>${esc(name)}</td><td>${step}</td><td>${(100 * e.accuracy).toFixed(1)} %</td><td>${(100 * e.formatRate).toFixed(1)} %</td><td>${e.languageConsistency === undefined ? "–" : `${(100 * e.languageConsistency).toFixed(1)} %`}</td><td>${e.meanLength.toFixed(1)}</td></tr>`
  // A mixture's evaluation is followed by one row per task.
  const evalRows = input.evals
    .map((e) => row(e.name, e.step, e) + Object.entries(e.tasks ?? {}).map(([task, t]) => row(`${e.name} · ${task}`, e.step, t)).join(""))
    .join("")
  const samples = input.evals
    .map(
      (e) => `<h3>${esc(e.name)} (step ${e.step})</h3><table class="samples"><tr><th>prompt</th><th>completion</th><th>answer</th><th>reward</th></tr>${e.samples
        .map((s) => `<tr><td>${esc(s.prompt)}</td><td><code>${esc(s.completion)}</code></td><td>${esc(s.answer)}</td><td>${Number.isFinite(s.reward) ? s.reward.toFixed(2) : "NaN"}</td></tr>`)
        .join("")}</table>`
    )
    .join("\n")
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(input.title)}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<style>
body{font:14px system-ui,sans-serif;margin:24px;color:#111;max-width:1400px}
.grid{display:flex;flex-wrap:wrap;gap:12px} figure{margin:0;border:1px solid #ddd;border-radius:6px;padding:6px}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
.samples td{max-width:520px;white-space:pre-wrap;word-break:break-word} code{font-size:12px}
pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:300px}
</style></head><body>
<h1>${esc(input.title)}</h1>
<h2>Evaluations</h2>
<table><tr><th>eval</th><th>step</th><th>accuracy</th><th>format</th><th>language</th><th>mean length</th></tr>${evalRows}</table>
<h2>Curves</h2>
<div class="grid">${charts.join("\n")}</div>
<h2>Samples</h2>
${samples}
<h2>Manifest</h2>
<pre>${esc(JSON.stringify(input.manifest, null, 2))}</pre>
</body></html>
`
}
