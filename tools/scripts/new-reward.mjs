#!/usr/bin/env node
/**
 * Creates a reward plugin package: `npm run new-reward -- <name>` (or `node tools/scripts/new-reward.mjs <name>`).
 *
 * Writes `plugins/reward-<name>/` from `tools/scripts/templates/reward/` (every `*.tmpl` file, with
 * `__NAME__`, `__PACKAGE__` and the core/effect/arrow versions filled in): package.json (keyword
 * `r1flow-plugin`, core/effect/arrow as peer dependencies), tsconfigs, vitest/eslint configs, an example
 * reward with its Effect Schema config in `src/index.ts`, and a test with hand-written cases and the
 * conformance suite wired in. Options: `--package <npm name>` (default `@r1flow/reward-<name>`).
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { dirname, join, relative } from "node:path"
import { fileURLToPath } from "node:url"

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..")
const templates = join(root, "tools", "scripts", "templates", "reward")

const fail = (message) => {
  console.error(`new-reward: ${message}`)
  process.exit(1)
}

const args = process.argv.slice(2)
const positional = []
const options = {}
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--help" || args[i] === "-h") {
    console.log("usage: npm run new-reward -- <name> [--package <npm package name>]")
    process.exit(0)
  }
  if (args[i].startsWith("--")) {
    const key = args[i].slice(2)
    if (key !== "package") fail(`unknown option --${key}`)
    if (args[i + 1] === undefined) fail(`--${key} needs a value`)
    options[key] = args[++i]
  } else positional.push(args[i])
}
if (positional.length !== 1) fail("give exactly one reward name, e.g. `npm run new-reward -- my-reward`")

// The registry's rule for plugin names (core Plugin.Descriptor): lower case, digits, dashes.
const name = positional[0].replace(/^reward-/, "")
if (!/^[a-z0-9][a-z0-9-]*$/.test(name)) fail(`"${positional[0]}" is not a valid reward name: use lower-case letters, digits and dashes`)
const packageName = options.package ?? `@r1flow/reward-${name}`
if (!/^(@[a-z0-9][a-z0-9._-]*\/)?[a-z0-9][a-z0-9._-]*$/.test(packageName)) fail(`"${packageName}" is not a valid npm package name`)

const target = join(root, "plugins", `reward-${name}`)
if (existsSync(target)) fail(`${relative(root, target)} already exists`)

const readJson = (path) => JSON.parse(readFileSync(path, "utf8"))
const core = readJson(join(root, "packages", "core", "package.json"))
const values = {
  __NAME__: name,
  __PACKAGE__: packageName,
  __CORE_VERSION__: core.version,
  __EFFECT_VERSION__: core.peerDependencies.effect,
  __ARROW_RANGE__: core.peerDependencies["apache-arrow"]
}

const files = []
const walk = (dir) => {
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry)
    if (statSync(path).isDirectory()) walk(path)
    else if (entry.endsWith(".tmpl")) files.push(path)
  }
}
walk(templates)
if (files.length === 0) fail(`no templates found under ${relative(root, templates)}`)

for (const source of files) {
  let rel = relative(templates, source).slice(0, -".tmpl".length)
  if (rel === join("test", "reward.test.ts")) rel = join("test", `${name}.test.ts`)
  const text = readFileSync(source, "utf8").replace(/__[A-Z_]+__/g, (key) => {
    if (!(key in values)) fail(`template ${relative(root, source)} uses unknown placeholder ${key}`)
    return values[key]
  })
  const dest = join(target, rel)
  mkdirSync(dirname(dest), { recursive: true })
  writeFileSync(dest, text)
}

console.log(`Created ${relative(root, target)}/ (${packageName}) with ${files.length} files.
Next:
  flock /tmp/r1flow-npm.lock npm install     # links the new workspace package
  npx nx sync                                 # TypeScript project references
  npx nx run ${packageName}:test              # hand-written cases + the conformance suite
Then edit src/index.ts (the rule and its config schema) and test/${name}.test.ts. See docs/reward-plugins.md.`)
