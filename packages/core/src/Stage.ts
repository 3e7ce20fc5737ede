/**
 * A stage maps a record batch of its input schema to a record batch of its output schema.
 *
 * Stages check their input on entry (a missing column or a column of the wrong type is a
 * `StageError` naming the stage, the column and the expected type) and only add columns:
 * `addColumns` builds a new batch that shares the input's column data and refuses to overwrite.
 * The exception is a stage whose very job is a new value for a column (a reward shaper, an advantage
 * estimator): `replaceColumns` builds a new batch for it, and the input is still never mutated.
 */
import { Field, makeData, RecordBatch, Schema as ArrowSchema, Struct, vectorFromArray, type Data, type DataType, type TypeMap, type Vector } from "apache-arrow"
import { Effect, Schema } from "effect"

/** A stage could not run: bad input schema, a failure inside, or a contract breach in its output. */
export class StageError extends Schema.TaggedError<StageError>()("StageError", {
  stage: Schema.String,
  message: Schema.String,
  cause: Schema.optional(Schema.Defect())
}) {}

/** A typed batch-to-batch step of a pipeline. `R` are the Effect services it needs (a policy, a tokenizer, …). */
export interface Stage<In extends TypeMap, Out extends TypeMap, R = never> {
  readonly name: string
  /** Columns the stage reads (it may receive more). */
  readonly input: ArrowSchema<In>
  /** Columns the stage guarantees on its output. */
  readonly output: ArrowSchema<Out>
  /** Maps one batch; the input has already been checked against `input`. */
  readonly run: (batch: RecordBatch<In>) => Effect.Effect<RecordBatch<Out>, StageError, R>
}

/** Any stage, for heterogeneous lists. */
export type Any = Stage<any, any, any>

/** What a pipeline checks of a stage before any batch flows: its name and schemas (`Pipeline.validate`). */
export interface Signature {
  readonly name: string
  readonly input: ArrowSchema
  readonly output: ArrowSchema
}

const isSchema = (u: unknown): u is ArrowSchema => typeof u === "object" && u !== null && Array.isArray((u as ArrowSchema).fields)

/**
 * True for an object with a stage's shape (a plugin's `make` result is checked with it). Schemas are
 * recognised by their fields, not `instanceof`: a plugin may carry its own copy of apache-arrow.
 */
export const isStage = (u: unknown): u is Any =>
  typeof u === "object" && u !== null && typeof (u as Any).name === "string" && typeof (u as Any).run === "function" &&
  isSchema((u as Any).input) && isSchema((u as Any).output)

/** Human-readable name of an Arrow type, e.g. `List<Int32>`. */
export const typeName = (t: DataType): string => String(t)

const sameType = (a: DataType, b: DataType): boolean => typeName(a) === typeName(b)

/** Where `schema` lacks a field of `required`, or has it with another type: one line per problem. */
export const schemaProblems = (required: ArrowSchema, actual: ArrowSchema): Array<string> => {
  const problems: Array<string> = []
  for (const f of required.fields) {
    const got = actual.fields.find((g) => g.name === f.name)
    if (got === undefined) problems.push(`missing column "${f.name}" (expected ${typeName(f.type)})`)
    else if (!sameType(f.type, got.type)) problems.push(`column "${f.name}" has type ${typeName(got.type)}, expected ${typeName(f.type)}`)
  }
  return problems
}

/** Fails with a `StageError` naming each missing or mistyped column of `batch` against `schema`. */
export const check = <T extends TypeMap>(stage: string, schema: ArrowSchema<T>, batch: RecordBatch): Effect.Effect<RecordBatch<T>, StageError> => {
  const problems = schemaProblems(schema, batch.schema)
  return problems.length === 0
    ? Effect.succeed(batch as unknown as RecordBatch<T>)
    : Effect.fail(new StageError({ stage, message: `input does not match: ${problems.join("; ")}` }))
}

/** Builds a stage whose `run` checks its input schema before calling `transform`. */
export const make = <In extends TypeMap, Out extends TypeMap, R = never>(def: {
  readonly name: string
  readonly input: ArrowSchema<In>
  readonly output: ArrowSchema<Out>
  readonly transform: (batch: RecordBatch<In>) => Effect.Effect<RecordBatch<Out>, StageError, R>
}): Stage<In, Out, R> => ({
  name: def.name,
  input: def.input,
  output: def.output,
  run: (batch) => Effect.flatMap(check(def.name, def.input, batch), def.transform)
})

/**
 * A new batch holding every column of `batch` plus `columns`, with the field order of the input
 * followed by the new fields in the order of `output` (fields of `output` the input already has are
 * kept from the input). Column data is shared, never copied; overwriting an existing column is an error.
 */
export const addColumns = <Out extends TypeMap>(
  stage: string,
  batch: RecordBatch,
  output: ArrowSchema<Out>,
  columns: Record<string, Vector | Data>,
  extraFields: ReadonlyArray<Field> = []
): Effect.Effect<RecordBatch<Out>, StageError> =>
  Effect.try({
    try: () => {
      const fields: Array<Field> = [...batch.schema.fields]
      const children: Array<Data> = batch.schema.fields.map((_, i) => batch.data.children[i])
      const wanted = [...output.fields.filter((f) => !batch.schema.fields.some((g) => g.name === f.name)), ...extraFields]
      for (const name of Object.keys(columns)) {
        if (batch.schema.fields.some((g) => g.name === name)) throw new Error(`would overwrite input column "${name}"; stages only add columns`)
        if (!wanted.some((f) => f.name === name)) throw new Error(`column "${name}" is not declared in the stage's output schema`)
      }
      for (const f of wanted) {
        const c = columns[f.name]
        if (c === undefined) throw new Error(`output column "${f.name}" was not produced`)
        const data = "data" in c ? single(f.name, c) : c
        if (data.length !== batch.numRows) throw new Error(`output column "${f.name}" has ${data.length} rows, input has ${batch.numRows}`)
        if (!sameType(data.type, f.type)) throw new Error(`output column "${f.name}" has type ${typeName(data.type)}, declared ${typeName(f.type)}`)
        fields.push(f)
        children.push(data)
      }
      const metadata = new Map([...batch.schema.metadata, ...output.metadata])
      const schema = new ArrowSchema(fields, metadata)
      return new RecordBatch(schema, makeData({ type: new Struct(fields), length: batch.numRows, nullCount: 0, children })) as unknown as RecordBatch<Out>
    },
    catch: (cause) => new StageError({ stage, message: cause instanceof Error ? cause.message : String(cause), cause })
  })

/**
 * A new batch equal to `batch` with the named columns' data replaced (same name, type and row count), for
 * the stages whose job is to rewrite a value rather than add one: a reward shaper (`reward`), an advantage
 * estimator (`advantage`). Every other column is shared and `batch` itself is left as it was.
 */
export const replaceColumns = <T extends TypeMap>(stage: string, batch: RecordBatch<T>, columns: Record<string, Vector | Data>): Effect.Effect<RecordBatch<T>, StageError> =>
  Effect.try({
    try: () => {
      const children = batch.schema.fields.map((_, i) => batch.data.children[i])
      for (const [name, c] of Object.entries(columns)) {
        const i = batch.schema.fields.findIndex((f) => f.name === name)
        if (i < 0) throw new Error(`cannot replace column "${name}": the batch has no such column`)
        const data = "data" in c ? single(name, c) : c
        const field = batch.schema.fields[i]
        if (data.length !== batch.numRows) throw new Error(`column "${name}" has ${data.length} rows, the batch ${batch.numRows}`)
        if (!sameType(data.type, field.type)) throw new Error(`column "${name}" has type ${typeName(data.type)}, the batch's is ${typeName(field.type)}`)
        children[i] = data
      }
      return new RecordBatch(batch.schema, makeData({ type: new Struct(batch.schema.fields), length: batch.numRows, nullCount: 0, children })) as RecordBatch<T>
    },
    catch: (cause) => new StageError({ stage, message: cause instanceof Error ? cause.message : String(cause), cause })
  })

const single = (name: string, v: Vector): Data => {
  if (v.data.length !== 1) throw new Error(`output column "${name}" has ${v.data.length} chunks; produce one chunk per batch`)
  return v.data[0]
}

/** A new batch with the rows of `batch` at `indices` (copies the selected rows of every column). */
export const takeRows = <T extends TypeMap>(batch: RecordBatch<T>, indices: ReadonlyArray<number>): RecordBatch<T> => {
  // Arrow JS has no `take` kernel; rebuilding each column through its type's builder keeps every type.
  const children = batch.schema.fields.map((_, i) => takeVector(batch.getChildAt(i)!, indices))
  return new RecordBatch(batch.schema, makeData({ type: new Struct(batch.schema.fields), length: indices.length, nullCount: 0, children }))
}

const takeVector = (col: Vector, indices: ReadonlyArray<number>): Data => {
  const values = indices.map((i) => {
    const v = col.get(i)
    // List cells come back as Vectors; the builder wants plain arrays.
    return v !== null && typeof v === "object" && "toArray" in v ? Array.from(v.toArray() as ArrayLike<unknown>) : v
  })
  return single("take", vectorFromArray(values as Array<unknown>, col.type))
}
