/**
 * Experiment configs: JSON files decoded with Effect Schema.
 *
 * Unknown keys are errors (a typo must never be silently ignored), and every problem is reported
 * with its path and what was found: `rollout.temperature: expected number, got "hot"`.
 */
import { readFile } from "node:fs/promises"
import { Effect, Schema, SchemaIssue } from "effect"

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

const formatter = SchemaIssue.makeFormatterStandardSchemaV1()

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

/** Turns a schema failure into `path: expected …, got …` lines. */
export const problems = (issue: SchemaIssue.Issue, input: unknown, prefix = ""): Array<string> =>
  formatter(issue).issues.map((i) => {
    const path = (i.path ?? []).map((p) => (typeof p === "object" && p !== null && "key" in p ? (p as { key: PropertyKey }).key : p)) as Array<PropertyKey>
    const where = formatPath(path, prefix)
    const msg = i.message.charAt(0).toLowerCase() + i.message.slice(1)
    if (msg.startsWith("expected no excess property") || msg.startsWith("unexpected key")) return `${where}: unknown key`
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

/** Reads a JSON config file (no decoding); a syntax error names the file and position. */
export const readJson = (path: string): Effect.Effect<unknown, ConfigError> =>
  Effect.tryPromise({
    try: () => readFile(path, "utf8"),
    catch: (e) => new ConfigError({ source: path, problems: [`cannot read: ${(e as Error).message}`] })
  }).pipe(
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
