/**
 * Vitest global setup: brings this plugin's `dist/` up to date (`tsc --build`, a no-op when it is),
 * because a reward worker imports the built plugin even while the tests run the TypeScript sources.
 * Type errors do not stop the tests (tsc still emits; the typecheck target reports them).
 */
import { spawnSync } from "node:child_process"
import { createRequire } from "node:module"
import { fileURLToPath } from "node:url"

export const setup = (): void => {
  const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc")
  const cwd = fileURLToPath(new URL("..", import.meta.url))
  const built = spawnSync(process.execPath, [tsc, "--build", "tsconfig.lib.json"], { cwd, stdio: "inherit" })
  if (built.status !== 0) console.warn(`@r1flow/reward-language-consistency: tsc --build exited with ${built.status ?? built.signal}; the worker test runs what it emitted`)
}
