/**
 * The code-execution reward (DeepSeek-R1 §2.2.2: "for LeetCode problems, a compiler can be used to
 * generate feedback based on predefined test cases").
 *
 *   r_i = passed_i / tests_i          ("fraction", the default)
 *   r_i = [passed_i = tests_i]        ("all-or-nothing", R1's accuracy reward)
 *
 * where the program is the last fenced code block of completion i and the tests come from the row's
 * metadata (see `Cases`). Scores:
 *   - 0 when there is no code block, its language is not the task's or not supported, or a test fails
 *     (wrong output, crash, CPU/memory/output limit, wall-clock timeout);
 *   - NaN when the row has no `tests` (not a code task), or when a run hit an infrastructure failure:
 *     the sandbox did not start, the pool stayed saturated past `queueTimeoutMs`, or the task's language
 *     has no interpreter on this machine. A wrong answer and a broken sandbox are different things; the
 *     counters in `stats()` keep them apart and the reward stage counts NaN rows (`frac_nan`).
 *
 * Identical (language, code, test) runs inside one batch run once: G samples of a prompt often agree.
 */
import { availableParallelism } from "node:os"
import { Effect, Exit, Result, Schema } from "effect"
import { Config as CoreConfig, type Reward } from "@r1flow/core"
import * as Cases from "./Cases.js"
import * as Extract from "./Extract.js"
import * as Pool from "./Pool.js"
import * as Sandbox from "./Sandbox.js"

const Positive = Schema.Finite.check(Schema.isGreaterThan(0))
const PositiveInt = Schema.Int.check(Schema.isGreaterThan(0))

/** Per-run limits in the config (all optional; defaults in `Sandbox.defaultLimits`). */
export const LimitsConfig = Schema.Struct({
  cpuSeconds: Schema.optionalKey(Positive),
  wallMs: Schema.optionalKey(Positive),
  memoryMb: Schema.optionalKey(Positive),
  fileMb: Schema.optionalKey(Positive),
  openFiles: Schema.optionalKey(PositiveInt),
  processes: Schema.optionalKey(PositiveInt),
  outputKb: Schema.optionalKey(Positive)
})

/** The plugin's config section. */
export const Config = Schema.Struct({
  /** `fraction` of tests passed, or 1 only when all pass. */
  scoring: Schema.Literals(["fraction", "all-or-nothing"]).pipe(Schema.withDecodingDefaultKey(Effect.succeed("fraction" as const))),
  /**
   * `bwrap` (default). `unsandboxed` runs model code as the trainer's user with rlimits only and
   * warns on every call: only for machines that cannot create the sandbox, on code you trust.
   */
  sandbox: Schema.Literals(["bwrap", "unsandboxed"]).pipe(Schema.withDecodingDefaultKey(Effect.succeed("bwrap" as const))),
  /** Runs at once (default: the number of CPUs). */
  concurrency: Schema.optionalKey(PositiveInt),
  /** How long a run may wait for a slot before it is an infrastructure failure (NaN). */
  queueTimeoutMs: Positive.pipe(Schema.withDecodingDefaultKey(Effect.succeed(60_000))),
  limits: Schema.optionalKey(LimitsConfig)
})
/** The plugin's config section. */
export type Config = typeof Config.Type

/** Counters since the reward was made. */
export interface Stats {
  /** Sandboxed runs started (after de-duplication). */
  readonly runs: number
  readonly passed: number
  readonly failed: number
  /** Failed runs by how they ended. */
  readonly timedOut: number
  readonly outputLimit: number
  readonly signaled: number
  /** Infrastructure failures (each makes its row NaN). */
  readonly sandboxErrors: number
  readonly saturated: number
  readonly noInterpreter: number
  /** Rows scored NaN because of an infrastructure failure (not rows without tests). */
  readonly infraNanRows: number
  /** Rows without `tests` in their metadata. */
  readonly notApplicableRows: number
  /** Rows with no code block or a block in the wrong or an unsupported language. */
  readonly noCodeRows: number
  /** The last infrastructure failure's message. */
  readonly lastInfraError: string | null
}

/** The reward's name (its column is `reward_code`). */
export const NAME = "code"
/** The reward's version. */
export const VERSION = "0.1.0"

/** The reward object: `score` plus counters and the sandbox it runs in. */
export interface CodeReward extends Reward.Reward {
  readonly score: (input: Reward.Input) => Promise<Float32Array>
  readonly stats: () => Stats
  readonly sandbox: Sandbox.Sandbox
}

/** Printed on every call in unsandboxed mode. */
export const UNSANDBOXED_WARNING =
  "reward code: running model-written code UNSANDBOXED (config sandbox: \"unsandboxed\"); it runs as this user with only rlimits and can read, write and network like you"

/** The limits a config asks for. */
export const limitsOf = (config: Config): Sandbox.Limits => {
  const l = config.limits ?? {}
  const d = Sandbox.defaultLimits
  return {
    cpuSeconds: l.cpuSeconds ?? d.cpuSeconds,
    wallMs: l.wallMs ?? d.wallMs,
    memoryBytes: l.memoryMb !== undefined ? l.memoryMb * 1024 ** 2 : d.memoryBytes,
    fileBytes: l.fileMb !== undefined ? l.fileMb * 1024 ** 2 : d.fileBytes,
    openFiles: l.openFiles ?? d.openFiles,
    processes: l.processes ?? d.processes,
    outputBytes: l.outputKb !== undefined ? l.outputKb * 1024 : d.outputBytes
  }
}

type Verdict = "pass" | "fail" | { readonly infra: string }

type RowPlan =
  | { readonly _tag: "na" }
  | { readonly _tag: "zero" }
  | { readonly _tag: "nan"; readonly why: string }
  | { readonly _tag: "run"; readonly keys: ReadonlyArray<string> }

const decodeSpec = Schema.decodeUnknownResult(Cases.Spec, { errors: "all" })

/** Builds the reward on an existing sandbox (the plugin's `make` creates the sandbox first). */
export const makeWith = (config: Config, sandbox: Sandbox.Sandbox, pool: Pool.Pool = Pool.make(config.concurrency ?? availableParallelism(), config.queueTimeoutMs)): CodeReward => {
  const limits = limitsOf(config)
  const counts = {
    runs: 0, passed: 0, failed: 0, timedOut: 0, outputLimit: 0, signaled: 0,
    sandboxErrors: 0, saturated: 0, noInterpreter: 0, infraNanRows: 0, notApplicableRows: 0, noCodeRows: 0,
    lastInfraError: null as string | null
  }

  const planRow = (input: Reward.Input, i: number, jobs: Map<string, Cases.Job>): RowPlan => {
    const meta = input.metadata[i]
    if (!("tests" in meta)) return { _tag: "na" }
    const raw = { tests: meta.tests, ...("language" in meta ? { language: meta.language } : {}) }
    const decoded = decodeSpec(raw)
    if (Result.isFailure(decoded)) {
      throw new Error(`reward code: row ${i}: bad test cases in metadata: ${CoreConfig.problems(decoded.failure.issue, raw, "metadata").slice(0, 5).join("; ")}`)
    }
    const spec = { value: decoded.success }
    const block = Extract.lastBlock(input.completions[i])
    if (block === undefined) return { _tag: "zero" }
    const tagged = Extract.languageOfTag(block.tag)
    const language = tagged ?? (block.tag === "" ? spec.value.language : undefined)
    if (language === undefined || (spec.value.language !== undefined && language !== spec.value.language)) return { _tag: "zero" }
    if (!sandbox.languages.has(language)) return { _tag: "nan", why: sandbox.missing.get(language) ?? `no ${language} interpreter` }
    const keys = spec.value.tests.map((t) => {
      const key = JSON.stringify([language, block.code, t])
      if (!jobs.has(key)) jobs.set(key, Cases.job(language, block.code, t))
      return key
    })
    return { _tag: "run", keys }
  }

  const runJob = (job: Cases.Job): Effect.Effect<Verdict> =>
    pool.run(sandbox.run(job.program, limits)).pipe(
      Effect.map((outcome): Verdict => {
        counts.runs++
        if (outcome._tag === "TimedOut") counts.timedOut++
        if (outcome._tag === "OutputLimit") counts.outputLimit++
        if (outcome._tag === "Signaled") counts.signaled++
        const ok = job.judge(outcome)
        if (ok) counts.passed++
        else counts.failed++
        return ok ? "pass" : "fail"
      }),
      Effect.catch((e) => {
        if (e._tag === "PoolSaturated") counts.saturated++
        else counts.sandboxErrors++
        counts.lastInfraError = e.message
        return Effect.succeed({ infra: e.message })
      })
    )

  const score = async (input: Reward.Input): Promise<Float32Array> => {
    if (sandbox.mode === "unsandboxed") console.warn(UNSANDBOXED_WARNING)
    const jobs = new Map<string, Cases.Job>()
    const plans = Array.from({ length: input.rows }, (_, i) => planRow(input, i, jobs))
    const keys = [...jobs.keys()]
    const verdicts = await Effect.runPromise(
      Effect.forEach(keys, (k) => runJob(jobs.get(k)!), { concurrency: "unbounded" }),
      { signal: input.signal }
    )
    const byKey = new Map(keys.map((k, j) => [k, verdicts[j]]))
    const out = new Float32Array(input.rows)
    const infraMessages = new Set<string>()
    plans.forEach((p, i) => {
      if (p._tag === "na") {
        counts.notApplicableRows++
        out[i] = NaN
      } else if (p._tag === "zero") {
        counts.noCodeRows++
        out[i] = 0
      } else if (p._tag === "nan") {
        counts.noInterpreter++
        counts.infraNanRows++
        infraMessages.add(p.why)
        out[i] = NaN
      } else {
        const vs = p.keys.map((k) => byKey.get(k)!)
        const infra = vs.find((v): v is { infra: string } => typeof v === "object")
        if (infra !== undefined) {
          counts.infraNanRows++
          infraMessages.add(infra.infra)
          out[i] = NaN
          return
        }
        const passed = vs.filter((v) => v === "pass").length
        out[i] = config.scoring === "fraction" ? passed / vs.length : passed === vs.length ? 1 : 0
      }
    })
    if (infraMessages.size > 0) {
      console.warn(`reward code: ${plans.filter((p, i) => p._tag !== "na" && Number.isNaN(out[i])).length} row(s) NaN from infrastructure failures: ${[...infraMessages].join("; ")}`)
    }
    return out
  }

  return { name: NAME, version: VERSION, score, stats: () => ({ ...counts }), sandbox }
}

/** Creates the sandbox (checking it works) and the reward; throws `SandboxUnavailable`'s message when it cannot. */
export const make = (config: Config, options: Partial<Sandbox.Options> = {}): CodeReward => {
  const exit = Effect.runSyncExit(Sandbox.make({ ...options, mode: config.sandbox }))
  if (Exit.isFailure(exit)) {
    const err = exit.cause.reasons.find((r) => r._tag === "Fail")
    throw new Error(`reward code refuses to run: ${err?._tag === "Fail" ? err.error.message : String(exit.cause)}`)
  }
  if (config.sandbox === "unsandboxed") console.warn(UNSANDBOXED_WARNING)
  return makeWith(config, exit.value)
}
