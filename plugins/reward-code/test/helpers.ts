import { Effect, Exit } from "effect"
import * as Sandbox from "../src/Sandbox.js"

/** The real sandbox on this machine, or why there is none (probed once per test file). */
export const probe = (): { readonly sandbox: Sandbox.Sandbox } | { readonly reason: string } => {
  const exit = Effect.runSyncExit(Sandbox.make({ mode: "bwrap" }))
  if (Exit.isSuccess(exit)) return { sandbox: exit.value }
  const reason = String(exit.cause)
  console.warn(`\n*** reward-code: SKIPPING sandboxed tests: the bubblewrap sandbox is unavailable here:\n*** ${reason}\n`)
  return { reason }
}

/** A completion whose last fenced block is `code`. */
export const answer = (tag: string, code: string) => `<think>I will write it.</think>\n\`\`\`${tag}\n${code}\n\`\`\`\n`
