/**
 * Finds the code a completion answers with: the last fenced block (```lang … ```), since R1-style
 * completions think first (often with scratch snippets) and give the final program last.
 */
import type { Language } from "./Sandbox.js"

/** A fenced block: its info-string tag (lower-cased, `""` when untagged) and its body. */
export interface Block {
  readonly tag: string
  readonly code: string
}

// An opening fence of 3+ backticks or tildes, closed by the same fence on its own line (or the end of text).
const FENCE = /^[ \t]{0,3}(`{3,}|~{3,})[ \t]*([^\s`]*)[^\n]*\n([\s\S]*?)(?:^[ \t]{0,3}\1[ \t]*$|(?![\s\S]))/gm

/** The last fenced code block of `text`, if any. An unclosed final fence runs to the end of the text. */
export const lastBlock = (text: string): Block | undefined => {
  let last: Block | undefined
  for (const m of text.matchAll(FENCE)) last = { tag: m[2].toLowerCase(), code: m[3].replace(/\n$/, "") }
  return last
}

const TAGS: Record<string, Language> = {
  js: "javascript", javascript: "javascript", node: "javascript", nodejs: "javascript", mjs: "javascript", cjs: "javascript",
  py: "python", python: "python", python3: "python", py3: "python"
}

/** The language a block's tag names (`undefined` for untagged or unsupported tags). */
export const languageOfTag = (tag: string): Language | undefined => TAGS[tag]
