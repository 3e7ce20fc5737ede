import { accessSync, constants, mkdirSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { chromium } from "playwright-core"
import { describe, expect, it } from "vitest"
import * as Report from "../src/Report.js"

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium"
// Executable, not merely present: a file left without its execute bit cannot be launched either.
const executable = (path: string) => {
  try {
    accessSync(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}
const hasChromium = executable(CHROMIUM)
if (!hasChromium) console.warn(`report.test: skipping the browser check: no executable Chromium at ${CHROMIUM} (.ci/run installs Debian's chromium)`)

const metrics = Array.from({ length: 30 }, (_, i) => ({
  step: i + 1,
  values: {
    reward: 0.3 + i * 0.02,
    "rewards/accuracy/mean": 0.25 + i * 0.02,
    "rewards/format/mean": 0.8 + i * 0.005,
    "completions/mean_length": 30 + i * 0.5,
    "completions/max_length": 40 + i,
    kl: i * 0.001,
    entropy: 1.2 - i * 0.02,
    "clip_ratio/region_mean": 0.01,
    learning_rate: 5e-4,
    loss: 0.1 - i * 0.001
  }
}))

const evals: Array<Report.EvalRecord> = [
  { name: "base", step: 0, accuracy: 0.31, formatRate: 0.7, meanLength: 33, samples: [{ prompt: "What is 12 + 30?", completion: "<think>2+0=2, 1+3=4 -> 42</think><answer>42</answer>", answer: "42", reward: 1 }] },
  { name: "final", step: 30, accuracy: 0.74, formatRate: 0.97, meanLength: 36, samples: [{ prompt: "What is 5 < 6?", completion: "<script>alert(1)</script> & <b>bold</b>", answer: "x", reward: Number.NaN }] }
]

describe("report.html", () => {
  const html = Report.render({ title: "r1flow run test", manifest: { name: "test", seed: 1 }, metrics, evals })

  it("is self-contained: no scripts, no external URLs, model text escaped", () => {
    expect(html).not.toMatch(/<script/i)
    expect(html).not.toMatch(/(src|href)=["']?https?:/i)
    expect(html).toContain("&lt;script&gt;alert(1)&lt;/script&gt;")
    for (const title of ["reward", "held-out accuracy", "completion length (tokens)", "KL to reference", "entropy", "clip ratio", "learning rate"]) {
      expect(html).toContain(`aria-label="${title}"`)
    }
  })

  it.skipIf(!hasChromium)("renders in headless Chromium with no console errors (screenshot saved)", async () => {
    const out = join(process.cwd(), "test-output")
    mkdirSync(out, { recursive: true })
    const file = join(out, "report.html")
    writeFileSync(file, html)
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    })
    try {
      const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } })
      const errors: Array<string> = []
      page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()) })
      page.on("pageerror", (e) => errors.push(e.message))
      const requests: Array<string> = []
      page.on("request", (r) => { if (!r.url().startsWith("file:")) requests.push(r.url()) })
      await page.goto(`file://${file}`)
      expect(await page.locator("svg").count()).toBeGreaterThanOrEqual(7)
      expect(await page.locator("table.samples tr").count()).toBe(4)
      await page.screenshot({ path: join(out, "report.png"), fullPage: true })
      expect(errors).toEqual([])
      expect(requests).toEqual([])
    } finally {
      await browser.close()
    }
  }, 60_000)
})
