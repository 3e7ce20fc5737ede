#!/usr/bin/env node
/**
 * The longest functions in the given packages, by source lines from the function's start to its end
 * (an outer function counts the lines of the functions inside it). House style: none over ~60 lines.
 *
 *   node tools/scripts/function-lengths.mjs packages/grpo packages/engine   [--over 60] [--most 10]
 *
 * Exits 1 when `--over N` is given and some function is longer than N.
 */
import { readdirSync, readFileSync, statSync } from "node:fs"
import { createRequire } from "node:module"
import path from "node:path"

const ts = createRequire(import.meta.url)("typescript")
const args = process.argv.slice(2)
const flag = (name, fallback) => {
  const i = args.indexOf(name)
  return i < 0 ? fallback : Number(args.splice(i, 2)[1])
}
const over = flag("--over", Infinity)
const most = flag("--most", 10)

const sources = (dir) =>
  readdirSync(dir).flatMap((name) => {
    const p = path.join(dir, name)
    if (statSync(p).isDirectory()) return name === "node_modules" || name === "dist" ? [] : sources(p)
    return /\.tsx?$/.test(name) && !name.endsWith(".d.ts") ? [p] : []
  })

const functions = (file) => {
  const src = ts.createSourceFile(file, readFileSync(file, "utf8"), ts.ScriptTarget.Latest, true)
  const out = []
  const line = (pos) => src.getLineAndCharacterOfPosition(pos).line
  const visit = (n) => {
    if (ts.isFunctionDeclaration(n) || ts.isArrowFunction(n) || ts.isFunctionExpression(n) || ts.isMethodDeclaration(n)) {
      let name = n.name?.getText(src) ?? ""
      for (let p = n.parent; !name && p !== undefined && !ts.isSourceFile(p); p = p.parent) name = p.name?.getText?.(src) ?? ""
      out.push({ file, line: line(n.getStart(src)) + 1, length: line(n.getEnd()) - line(n.getStart(src)) + 1, name })
    }
    ts.forEachChild(n, visit)
  }
  visit(src)
  return out
}

const all = args.flatMap((dir) => sources(path.join(dir, "src"))).flatMap(functions).sort((a, b) => b.length - a.length)
for (const f of all.slice(0, most)) console.log(`${String(f.length).padStart(4)}  ${f.file}:${f.line}  ${f.name}`)
const long = all.filter((f) => f.length > over)
if (long.length > 0) {
  console.log(`${long.length} function(s) over ${over} lines`)
  process.exit(1)
}
