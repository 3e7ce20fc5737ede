/**
 * What the CLI tests share: a test-sized recipe with overrides, a temp folder to run it in, and launchers
 * that start the built `r1flow` command or the built engine in a child process, as a user runs them, and
 * hand back its stdout, stderr, exit status and signal. The built engine is loaded from its `dist/` (the
 * test runner's source condition would resolve its TypeScript), with the `effect` beside it, as a user's
 * installed copies would be: so `npx nx run @r1flow/cli:build` comes first.
 */
import { spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { expect } from "vitest"

const require = createRequire(import.meta.url)

/** The built `r1flow` command. */
export const bin = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "bin", "r1flow.mjs")
/** The engine package's folder (its built-in recipes live in `recipes/`). */
export const engineRoot = dirname(require.resolve("@r1flow/engine/package.json"))
const engineDist = join(engineRoot, "dist", "index.js")
/** The built engine, as a file URL a child process can import from any working directory. */
export const engineUrl = pathToFileURL(engineDist).href
/** The `effect` the built engine uses, as a file URL (plugins written by a test import it). */
export const effectUrl = pathToFileURL(createRequire(engineDist).resolve("effect")).href

/** The arithmetic task at test size: one- and two-digit sums. */
export const arithmetic = (train: number, test: number) => ({ kind: "arithmetic", digits: [1, 2], ops: ["+"], train, test })

/** A pretrain stage of `steps` steps. */
export const pretrain = (steps: number, batchSize = 2) => ({ stage: "pretrain", config: { steps, batchSize } })

/** The eval stage named `final`, on `samples` held-out problems. */
export const finalEval = (samples: number, temperature: number, maxNewTokens = 4) =>
  ({ stage: "eval", name: "final", config: { samples, sampling: { maxNewTokens, temperature } } })

/**
 * A recipe that runs in seconds on wasm: a 1-layer model, 16 problems, a checkpoint after every step
 * (two kept), 3 pretrain steps, then a greedy eval of one problem. `patch` replaces top-level keys; a key
 * patched to `undefined` is left out.
 */
export const tinyRecipe = (patch: Record<string, unknown> = {}): Record<string, unknown> => ({
  name: "tiny",
  seed: 1,
  backend: "wasm",
  task: arithmetic(16, 2),
  corpus: { count: 16 },
  tokenizer: { kind: "compact", base: "cl100k_base", size: 512 },
  model: { dModel: 16, nLayers: 1, nHeads: 2, nKvHeads: 1, dFf: 32, maxSeqLen: 128 },
  checkpoint: { every: 1, keep: 2 },
  stages: [pretrain(3), finalEval(1, 0)],
  ...patch
})

/** A fresh temporary folder. */
export const tempDir = (prefix: string) => mkdtempSync(join(tmpdir(), `r1flow-${prefix}-`))

/** A fresh temp folder `base`, with `recipe` written to `base/<name>` and its `runsDir` set to `base/runs`. */
export const tempRun = (prefix: string, recipe: Record<string, unknown>, name = "tiny.json") => {
  const base = tempDir(prefix)
  const runs = join(base, "runs")
  const file = join(base, name)
  writeFileSync(file, JSON.stringify({ ...recipe, runsDir: runs }))
  return { base, file, runs }
}

/** How a child is started: extra env (over this process's), its working directory, how long it may take. */
export interface Launch {
  readonly env?: Record<string, string>
  readonly cwd?: string
  readonly timeout?: number
}

const spawn = (args: Array<string>, { env = {}, cwd, timeout = 120_000 }: Launch) =>
  spawnSync(process.execPath, args, { encoding: "utf8", timeout, cwd, env: { ...process.env, ...env } })

/** Runs `node --input-type=module -e script`. */
export const node = (script: string, launch: Launch = {}) => spawn(["--input-type=module", "-e", script], launch)

/** Runs the built `r1flow` command with `args`. */
export const r1flow = (args: Array<string>, launch: Launch = {}) => spawn([bin, ...args], launch)

/** What the engine is asked to do: `Run.run` of a recipe or `Run.resume` of a run directory. */
export interface EngineCall {
  readonly command: "run" | "resume"
  readonly arg: string
  readonly overrides?: ReadonlyArray<string>
  /** Print each log line as `LOG <line>` (else the log is dropped). */
  readonly log?: boolean
}

/**
 * Runs the built engine's `Run.run` / `Run.resume` in a child process. It prints `DIR <run directory>` when
 * the run ends, or `FAILED <tag>: <message>` on stderr and exits 3; `dir` is the directory it printed.
 */
export const engine = ({ command, arg, overrides, log = false }: EngineCall, launch: Launch = {}) => {
  const options = `{ ${overrides === undefined ? "" : `overrides: ${JSON.stringify(overrides)}, `}log: ${log ? `(l) => console.log("LOG " + l)` : "() => {}"} }`
  const script = `
const { Effect } = await import(${JSON.stringify(effectUrl)})
const { Run } = await import(${JSON.stringify(engineUrl)})
Effect.runPromise(Run.${command}(${JSON.stringify(arg)}, ${options}))
  .then((r) => console.log("DIR " + r.dir.root), (e) => { console.error("FAILED " + (e._tag ?? "") + ": " + e.message); process.exit(3) })
`
  const r = node(script, launch)
  return { ...r, dir: r.stdout.split("\n").find((l) => l.startsWith("DIR "))?.slice(4) }
}

/** The run directory a finished child printed; throws, with its output, when it printed none. */
export const runDir = (r: { readonly dir: string | undefined; readonly stdout: string; readonly stderr: string }) => {
  if (r.dir === undefined) throw new Error(`no run directory in output: ${r.stdout}\n${r.stderr}`)
  return r.dir
}

/** What a run directory ended with: its latest checkpoint's weights, its metrics and its final eval's samples. */
export const finalState = (dir: string) => {
  const latest = readFileSync(join(dir, "checkpoints", "latest"), "utf8").trim()
  return {
    latest,
    // A LoRA run's checkpoint holds its adapters instead of the whole model.
    weights: readFileSync(join(dir, "checkpoints", latest, "policy", existsSync(join(dir, "checkpoints", latest, "policy", "adapter_model.safetensors")) ? "adapter_model.safetensors" : "model.safetensors")),
    metrics: readFileSync(join(dir, "metrics.jsonl"), "utf8"),
    evals: JSON.parse(readFileSync(join(dir, "evals", "final.json"), "utf8")).samples
  }
}

/** Checks that a run ended exactly as `reference` did: the same metrics, bitwise the same weights, the same final eval. */
export const expectSameEnd = (got: ReturnType<typeof finalState>, reference: ReturnType<typeof finalState>) => {
  expect(got.metrics).toBe(reference.metrics)
  expect(Buffer.compare(got.weights, reference.weights)).toBe(0)
  expect(got.evals).toEqual(reference.evals)
}

/**
 * Runs the recipe `file` on the built engine, SIGKILLed at checkpoint write `at` (the
 * `R1FLOW_TEST_KILL_AT_CHECKPOINT` hook); checks it was killed and returns the one run directory it made in `runs`.
 */
export const killedRun = (file: string, runs: string, at: string) => {
  const before = new Set(existsSync(runs) ? readdirSync(runs) : [])
  const r = engine({ command: "run", arg: file }, { env: { R1FLOW_TEST_KILL_AT_CHECKPOINT: at } })
  expect(r.signal, `not killed at ${at}: status ${r.status}, ${r.stderr}`).toBe("SIGKILL")
  const fresh = readdirSync(runs).filter((d) => !before.has(d))
  expect(fresh).toHaveLength(1)
  return join(runs, fresh[0])
}
