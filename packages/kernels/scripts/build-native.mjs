#!/usr/bin/env node
/**
 * Builds the native kernels addon (build/Release/r1kernels.node) with the node-gyp that ships with npm.
 * Never fails the install: without a compiler or Node headers the kernels package reports the addon
 * missing and r1flow runs on the stock wasm kernels. Node headers are taken from the running Node's own
 * prefix when it has them (Debian's nodejs-dev, the official tarballs), so no download is needed.
 */
import { spawnSync } from "node:child_process"
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs"
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
const r = spawnSync(process.execPath, [gyp, "rebuild", ...nodedir], { cwd: root, stdio: ["ignore", "pipe", "pipe"], encoding: "utf8" })
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
