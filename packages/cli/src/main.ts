/** Process entry point of the `r1flow` command. */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Cause, Effect } from "effect"
import { program } from "./Cli.js"

const describe = (error: unknown): { line: string; detail: string } => {
  const e = error as { _tag?: string; message?: string; problems?: ReadonlyArray<string>; stage?: string; plugin?: string }
  const what = e._tag ?? "Error"
  const where = e.stage ?? e.plugin
  return { line: `r1flow: ${what}${where !== undefined ? ` (${where})` : ""}: ${(e.message ?? String(error)).split("\n")[0]}`, detail: e.message ?? "" }
}

program.pipe(
  Effect.catchCause((cause) =>
    Effect.sync(() => {
      const failure = Cause.squash(cause)
      const { line, detail } = describe(failure)
      console.error(line)
      const rest = detail.split("\n").slice(1).join("\n")
      if (rest.trim() !== "") console.error(rest)
      process.exitCode = 1
    })
  ),
  Effect.provide(NodeServices.layer),
  NodeRuntime.runMain
)
