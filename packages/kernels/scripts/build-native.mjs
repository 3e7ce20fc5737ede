#!/usr/bin/env node
/**
 * Builds the native kernels addon (build/Release/r1kernels.node) with the node-gyp that ships with npm.
 * Never fails the install: without a compiler or Node headers the kernels package reports the addon
 * missing and r1flow runs on the stock wasm kernels. Node headers are taken from the running Node's own
 * prefix when it has them (Debian's nodejs-dev, the official tarballs), so no download is needed.
 *
 * `R1FLOW_NATIVE_SANITIZE=1` builds an AddressSanitizer + UndefinedBehaviorSanitizer copy instead, into
 * build/Sanitize/ (the release build stays in place), which `Native.load` picks under the same variable.
 * Node itself is not instrumented, so the process must start with the ASan runtime preloaded: use
 * `tools/scripts/sanitize.mjs`, which sets that up and runs the kernel tests and a short demo under it.
 */
import { spawnSync } from "node:child_process"
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { createRequire } from "node:module"
import path from "node:path"
import { fileURLToPath } from "node:url"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const say = (msg) => console.log(`@r1flow/kernels: ${msg}`)

if (process.env.R1FLOW_SKIP_NATIVE === "1") {
  say("R1FLOW_SKIP_NATIVE=1: native kernels not built; the stock wasm kernels will be used")
  process.exit(0)
}

const findNodeGyp = () => {
  if (process.env.npm_config_node_gyp && existsSync(process.env.npm_config_node_gyp)) return process.env.npm_config_node_gyp
  const candidates = [path.resolve(path.dirname(process.execPath), "../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js")]
  try {
    candidates.unshift(createRequire(import.meta.url).resolve("node-gyp/bin/node-gyp.js"))
  } catch {
    // not a dependency here; npm's bundled copy is next
  }
  return candidates.find((p) => existsSync(p))
}

const gyp = findNodeGyp()
if (gyp === undefined) {
  say("node-gyp not found (it ships with npm); native kernels not built, the stock wasm kernels will be used")
  process.exit(0)
}
const prefix = path.resolve(path.dirname(process.execPath), "..")
const nodedir = existsSync(path.join(prefix, "include/node/node_api.h")) ? [`--nodedir=${prefix}`] : []
const sanitize = process.env.R1FLOW_NATIVE_SANITIZE === "1"

/** node-gyp rebuild in `cwd`; gyp's Makefiles append CFLAGS / LDFLAGS from the environment after binding.gyp's. */
const rebuild = (cwd, env) =>
  spawnSync(process.execPath, [gyp, "rebuild", ...nodedir], { cwd, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"], encoding: "utf8" })

if (sanitize) {
  // A copy of the sources, so that the release build in build/Release is neither replaced nor rebuilt.
  const work = mkdtempSync(path.join(tmpdir(), "r1kernels-sanitize-"))
  cpSync(path.join(root, "native"), path.join(work, "native"), { recursive: true })
  copyFileSync(path.join(root, "binding.gyp"), path.join(work, "binding.gyp"))
  const flags = "-O2 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
  const r = rebuild(work, { CFLAGS: flags, LDFLAGS: "-fsanitize=address,undefined" })
  if (r.status !== 0) {
    console.error(`${r.stdout ?? ""}${r.stderr ?? ""}`)
    say("the sanitizer build failed (see above)")
    process.exit(1)
  }
  mkdirSync(path.join(root, "build", "Sanitize"), { recursive: true })
  copyFileSync(path.join(work, "build", "Release", "r1kernels.node"), path.join(root, "build", "Sanitize", "r1kernels.node"))
  rmSync(work, { recursive: true, force: true })
  say("sanitizer build (ASan + UBSan) written to build/Sanitize/r1kernels.node")
  process.exit(0)
}

const r = rebuild(root, {})
if (r.status === 0) {
  rmSync(path.join(root, "build", "native-build.log"), { force: true })
  say("native kernels built (build/Release/r1kernels.node)")
} else {
  const log = `${r.stdout ?? ""}${r.stderr ?? ""}${r.error ? String(r.error) : ""}`
  // npm hides the output of install scripts that succeed, so the log is also kept where Kernels.install points.
  mkdirSync(path.join(root, "build"), { recursive: true })
  writeFileSync(path.join(root, "build", "native-build.log"), log)
  const tail = log.split("\n").filter((l) => !l.startsWith("gyp info")).slice(-15).join("\n")
  say(`native kernels could NOT be built; r1flow will use the stock wasm kernels (slower). Log: packages/kernels/build/native-build.log. node-gyp said:\n${tail}`)
}
