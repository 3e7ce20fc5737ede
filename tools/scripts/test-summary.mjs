#!/usr/bin/env node
// Nx runs each project's vitest separately; this sums their JSON reports into one closing line,
// so `npm test` ends with the whole workspace's count rather than the last project's.
import { existsSync, readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"

const roots = ["packages", "plugins", "datasets", "tools"]
let passed = 0, failed = 0, skipped = 0, files = 0
const rows = []
for (const root of roots) {
  if (!existsSync(root)) continue
  for (const dir of readdirSync(root)) {
    const report = join(root, dir, "test-output", "vitest", "report.json")
    if (!existsSync(report)) continue
    const r = JSON.parse(readFileSync(report, "utf8"))
    passed += r.numPassedTests; failed += r.numFailedTests
    skipped += (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0)
    files += r.numTotalTestSuites ?? 0
    rows.push(`  ${join(root, dir).padEnd(36)} ${String(r.numPassedTests).padStart(4)} passed  ${String(r.numFailedTests).padStart(3)} failed  ${String((r.numPendingTests ?? 0) + (r.numTodoTests ?? 0)).padStart(3)} skipped`)
  }
}
console.log("\nvitest summary, all projects:")
for (const row of rows) console.log(row)
console.log(`Tests: ${passed} passed, ${failed} failed, ${skipped} skipped`)
process.exit(failed > 0 || passed === 0 ? 1 : 0)
