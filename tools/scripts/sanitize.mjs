#!/usr/bin/env node
/**
 * The native kernels under AddressSanitizer + UndefinedBehaviorSanitizer: builds the sanitized addon
 * (build/Sanitize/, the release build untouched), then runs the kernel tests (both GEMM paths: the OpenBLAS
 * project and the R1FLOW_NO_BLAS=1 project) and the shortened demo (tools/scripts/smoke-overrides.json) on
 * OpenBLAS and on the addon's own GEMM, each on 1 and on 2 threads. Any sanitizer report fails the run
 * (-fno-sanitize-recover, halt_on_error); the addon's own bounds errors are JS exceptions and fail tests.
 *
 *   node tools/scripts/sanitize.mjs [--tests-only | --demo-only]
 *
 * Node is not instrumented, so the ASan runtime is preloaded (LD_PRELOAD) into every process; leak checking
 * is off (V8 keeps its heap to exit). ASan cannot see inside the wasm heap (one mapping to it): the stress
 * test's bystander and input checks cover writes there.
 */
import { spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..")
const args = new Set(process.argv.slice(2))
const sh = (cmd, argv, opts = {}) => spawnSync(cmd, argv, { cwd: root, stdio: "inherit", ...opts })

const asan = spawnSync("gcc", ["-print-file-name=libasan.so"], { encoding: "utf8" }).stdout?.trim()
if (!asan || asan === "libasan.so") {
  console.error("sanitize: gcc's libasan.so not found (Debian: apt-get install gcc)")
  process.exit(2)
}
if (sh(process.execPath, ["packages/kernels/scripts/build-native.mjs"], { env: { ...process.env, R1FLOW_NATIVE_SANITIZE: "1" } }).status !== 0) process.exit(1)

const env = (extra) => ({
  ...process.env,
  R1FLOW_NATIVE_SANITIZE: "1",
  LD_PRELOAD: asan,
  // V8 handles SIGSEGV itself (wasm bounds traps): ASan must let it.
  ASAN_OPTIONS: "detect_leaks=0:handle_segv=0:allow_user_segv_handler=1:halt_on_error=1:abort_on_error=1",
  UBSAN_OPTIONS: "print_stacktrace=1:halt_on_error=1",
  ...extra
})
const results = []
const record = (label, r) => {
  const ok = r.status === 0 && r.signal === null
  results.push(`${ok ? "clean " : "FAILED"}  ${label}${ok ? "" : ` (status ${r.status}, signal ${r.signal})`}`)
}

for (const threads of ["1", "2"]) {
  if (!args.has("--demo-only")) {
    console.log(`\n== kernel tests, both GEMM projects, R1FLOW_THREADS=${threads} ==`)
    record(`kernel tests (OpenBLAS and own GEMM), ${threads} thread(s)`, sh("npx", ["vitest", "run"], { cwd: join(root, "packages/kernels"), env: env({ R1FLOW_THREADS: threads }) }))
  }
  if (!args.has("--tests-only")) {
    for (const noBlas of ["0", "1"]) {
      const label = `shortened demo, ${noBlas === "1" ? "own GEMM" : "OpenBLAS"}, ${threads} thread(s)`
      console.log(`\n== ${label} ==`)
      const overrides = JSON.parse(readFileSync(join(root, "tools/scripts/smoke-overrides.json"), "utf8"))
      const runsDir = mkdtempSync(join(tmpdir(), "r1flow-sanitize-"))
      const set = [`runsDir=${runsDir}`, ...overrides].flatMap((o) => ["--set", o])
      record(label, sh(process.execPath, ["packages/cli/bin/r1flow.mjs", "run", "r1-zero", ...set], { env: env({ R1FLOW_THREADS: threads, R1FLOW_NO_BLAS: noBlas }) }))
    }
  }
}
console.log(`\nsanitizer runs (ASan + UBSan, ${asan}):\n${results.map((r) => `  ${r}`).join("\n")}`)
process.exit(results.every((r) => r.startsWith("clean")) ? 0 : 1)
