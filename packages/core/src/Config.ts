/**
 * Experiment configs: JSON files decoded with Effect Schema.
 *
 * Unknown keys are errors (a typo must never be silently ignored), and every problem is reported
 * with its path and what was found: `rollout.temperature: expected number, got "hot"`.
 */
import { readFile } from "node:fs/promises"
import { Effect, Result, Schema, SchemaAST, SchemaIssue } from "effect"
import * as Utf8 from "./Utf8.js"

/** A config (or a plugin's config section) that does not decode. */
export class ConfigError extends Schema.TaggedError<ConfigError>()("ConfigError", {
  /** Where it came from: a file path, `--set`, or a plugin name. */
  source: Schema.String,
  /** One line per problem, each starting with the key path. */
  problems: Schema.Array(Schema.String)
}) {
  override get message(): string {
    return `invalid config (${this.source}):\n  ${this.problems.join("\n  ")}`
  }
}

// An unknown key's message carries the keys its object does accept, for the "did you mean" below.
const UNKNOWN_KEY = "\u0000unknown key; accepted: "

const formatter = SchemaIssue.makeFormatterStandardSchemaV1({
  leafHook: (issue) =>
    issue._tag === "UnexpectedKey"
      ? UNKNOWN_KEY + JSON.stringify(SchemaAST.isObjects(issue.ast) ? issue.ast.propertySignatures.map((p) => String(p.name)) : [])
      : SchemaIssue.defaultLeafHook(issue)
})

/** Edit distance (insertions, deletions, substitutions and swaps of neighbours count 1). */
const distance = (a: string, b: string): number => {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)))
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1)
    }
  }
  return d[a.length][b.length]
}

// Case and separators are ignored, so `epsilon_high` finds `epsilonHigh` and `max-new-tokens` finds `maxNewTokens`.
const normalise = (key: string) => key.toLowerCase().replace(/[_-]/g, "")

/** The accepted key nearest to `key`, when it is near enough to be the one meant (about a third of its letters). */
export const nearest = (key: string, accepted: ReadonlyArray<string>): string | undefined => {
  let best: string | undefined
  let bestDistance = Math.max(1, Math.floor(normalise(key).length / 3)) + 1
  for (const candidate of accepted) {
    const d = distance(normalise(key), normalise(candidate))
    if (d < bestDistance) {
      best = candidate
      bestDistance = d
    }
  }
  return best
}

const unknownKey = (where: string, key: PropertyKey | undefined, message: string): string => {
  const accepted = JSON.parse(message.slice(UNKNOWN_KEY.length)) as Array<string>
  const guess = typeof key === "string" ? nearest(key, accepted) : undefined
  return guess === undefined ? `${where}: unknown key` : `${where}: unknown key (did you mean ${JSON.stringify(guess)}?)`
}

const at = (input: unknown, path: ReadonlyArray<PropertyKey>): { found: boolean; value: unknown } => {
  let v: unknown = input
  for (const key of path) {
    if (v === null || typeof v !== "object" || !(key in (v as object))) return { found: false, value: undefined }
    v = (v as Record<PropertyKey, unknown>)[key]
  }
  return { found: true, value: v }
}

const show = (value: unknown): string => {
  const text = JSON.stringify(value) ?? String(value)
  return text.length > 60 ? `${text.slice(0, 57)}...` : text
}

/** `a.b[2].c` from a path. */
export const formatPath = (path: ReadonlyArray<PropertyKey>, prefix = ""): string =>
  path.reduce<string>((acc, key) => (typeof key === "number" ? `${acc}[${key}]` : acc === "" ? String(key) : `${acc}.${String(key)}`), prefix) || "(root)"

/** Turns a schema failure into `path: expected …, got …` lines (`path: unknown key (did you mean "…"?)` for a typo). */
export const problems = (issue: SchemaIssue.Issue, input: unknown, prefix = ""): Array<string> =>
  formatter(issue).issues.map((i) => {
    const path = (i.path ?? []).map((p) => (typeof p === "object" && p !== null && "key" in p ? (p as { key: PropertyKey }).key : p)) as Array<PropertyKey>
    const where = formatPath(path, prefix)
    if (i.message.startsWith(UNKNOWN_KEY)) return unknownKey(where, path[path.length - 1], i.message)
    const msg = i.message.charAt(0).toLowerCase() + i.message.slice(1)
    if (msg.startsWith("missing key")) return `${where}: missing (required)`
    const got = at(input, path)
    return got.found ? `${where}: ${msg}, got ${show(got.value)}` : `${where}: ${msg}`
  })

/** Decodes `input` with `schema`, rejecting unknown keys; `prefix` is prepended to paths (e.g. `rewards[0].config`). */
export const decode = <A, I>(
  schema: Schema.Codec<A, I>,
  input: unknown,
  options: { readonly source: string; readonly prefix?: string }
): Effect.Effect<A, ConfigError> =>
  Schema.decodeUnknownEffect(schema, { onExcessProperty: "error", errors: "all" })(input).pipe(
    Effect.mapError((e) => new ConfigError({ source: options.source, problems: problems(e.issue, input, options.prefix) }))
  ) as Effect.Effect<A, ConfigError>

/** Reads a JSON config file (no decoding); a syntax error or bytes that are not UTF-8 name the file and position. */
export const readJson = (path: string): Effect.Effect<unknown, ConfigError> =>
  Effect.tryPromise({
    try: () => readFile(path),
    catch: (e) => new ConfigError({ source: path, problems: [`cannot read: ${(e as Error).message}`] })
  }).pipe(
    Effect.flatMap((bytes) => {
      const text = Utf8.decode(bytes)
      return Result.isSuccess(text) ? Effect.succeed(text.success) : Effect.fail(new ConfigError({ source: path, problems: [text.failure] }))
    }),
    Effect.flatMap((text) =>
      Effect.try({
        try: () => JSON.parse(text) as unknown,
        catch: (e) => new ConfigError({ source: path, problems: [`not valid JSON: ${(e as Error).message}`] })
      })
    )
  )

/** Reads and decodes a JSON config file. */
export const load = <A, I>(schema: Schema.Codec<A, I>, path: string): Effect.Effect<A, ConfigError> =>
  Effect.flatMap(readJson(path), (raw) => decode(schema, raw, { source: path }))

/**
 * Applies `key.path=value` overrides (from `--set`) to a raw config, returning a new object.
 * The value is parsed as JSON when it parses (`0.7`, `true`, `[1,2]`), else taken as a string.
 */
export const applyOverrides = (raw: unknown, overrides: ReadonlyArray<string>): Effect.Effect<unknown, ConfigError> =>
  Effect.try({
    try: () => {
      const root = structuredClone(raw) as Record<string, unknown>
      for (const o of overrides) {
        const eq = o.indexOf("=")
        if (eq <= 0) throw new Error(`"${o}" is not key=value`)
        const keys = o.slice(0, eq).split(".")
        const text = o.slice(eq + 1)
        let value: unknown
        try {
          value = JSON.parse(text)
        } catch {
          value = text
        }
        let node: Record<string, unknown> = root
        for (const k of keys.slice(0, -1)) {
          const next = node[k]
          if (next === undefined) node[k] = {}
          else if (next === null || typeof next !== "object") throw new Error(`"${o}": ${k} is not an object`)
          node = node[k] as Record<string, unknown>
        }
        node[keys[keys.length - 1]] = value
      }
      return root as unknown
    },
    catch: (e) => new ConfigError({ source: "--set", problems: [(e as Error).message] })
  })

/** The resolved config as the run records and prints it: stable 2-space JSON. */
export const print = (config: unknown): string => JSON.stringify(config, null, 2)
