/**
 * Stages composed over a `Stream` of record batches.
 *
 * `Pipeline.from(a).pipe(b).pipe(c)` is typed so that a stage whose input needs a column the
 * previous stage does not produce is a compile error (where the Arrow types say so), and
 * `validate` repeats the check at run time, before any data flows, for pipelines built from config
 * (`make` checks when the pipeline is built; `runBatch` runs one batch, `run` a stream).
 * Streams are pull-based, so a slow stage holds back the ones before it (backpressure for free).
 */
import { Schema as ArrowSchema, type RecordBatch, type TypeMap } from "apache-arrow"
import { Effect, Schema, Stream } from "effect"
import * as Stage from "./Stage.js"

/** The stages do not fit together; raised before any batch is read. */
export class PipelineError extends Schema.TaggedError<PipelineError>()("PipelineError", {
  message: Schema.String
}) {}

/** A chain of stages from `In` to `Out`. */
export interface Pipeline<In extends TypeMap, Out extends TypeMap, R> {
  readonly stages: ReadonlyArray<Stage.Any>
  readonly input: ArrowSchema<In>
  readonly output: ArrowSchema<Out>
  /**
   * Appends a stage. When the current output lacks a column the stage needs (or has it with another
   * Arrow type), the call does not compile: it then demands a second argument whose type names the columns.
   */
  pipe<Need extends TypeMap, Next extends TypeMap, R2>(
    next: Stage.Stage<Need, Next, R2>,
    ...mismatch: [Missing<Out, Need>] extends [never] ? [] : [columnsMissingOrMistyped: Missing<Out, Need>]
  ): Pipeline<In, Next, R | R2>
}

/** The column names `Need` has that `Have` lacks or types differently (`never` when it fits). */
export type Missing<Have extends TypeMap, Need extends TypeMap> = {
  [K in keyof Need]: K extends keyof Have ? (Have[K] extends Need[K] ? never : K) : K
}[keyof Need]

const build = <In extends TypeMap, Out extends TypeMap, R>(stages: ReadonlyArray<Stage.Any>): Pipeline<In, Out, R> => ({
  stages,
  input: stages[0].input,
  output: stages[stages.length - 1].output,
  pipe: ((next: Stage.Any) => build([...stages, next])) as unknown as Pipeline<In, Out, R>["pipe"]
})

/** A pipeline of one stage. */
export const from = <In extends TypeMap, Out extends TypeMap, R>(first: Stage.Stage<In, Out, R>): Pipeline<In, Out, R> =>
  build([first])

/** What consumes a pipeline's output (a trainer, a writer): the columns it reads. */
export interface Sink {
  readonly name: string
  readonly input: ArrowSchema
}

/**
 * Checks that each stage's input columns are produced by the stages before it (or the source schema), and
 * that the `sink` finds what it reads at the end; returns the columns available there (stages add columns,
 * so what was available stays available). Only names and schemas are read, so it runs before any stage is made.
 */
export const validate = (stages: ReadonlyArray<Stage.Signature>, source?: ArrowSchema, sink?: Sink): Effect.Effect<ArrowSchema, PipelineError> => {
  if (stages.length === 0) return Effect.fail(new PipelineError({ message: "a pipeline needs at least one stage" }))
  const problems: Array<string> = []
  let available: ArrowSchema | undefined = source
  for (const [i, stage] of stages.entries()) {
    if (available !== undefined) {
      const p = Stage.schemaProblems(stage.input, available)
      if (p.length > 0) problems.push(`stage "${stage.name}" needs what ${i === 0 ? "the source" : `stage "${stages[i - 1].name}"`} does not give: ${p.join("; ")}`)
      available = merge(available, stage.output)
    } else {
      available = merge(stage.input, stage.output)
    }
  }
  const end = available!
  const missing = sink === undefined ? [] : Stage.schemaProblems(sink.input, end)
  if (missing.length > 0) problems.push(`"${sink!.name}" needs what stage "${stages[stages.length - 1].name}" does not give: ${missing.join("; ")}`)
  return problems.length === 0 ? Effect.succeed(end) : Effect.fail(new PipelineError({ message: problems.join("\n") }))
}

/**
 * A pipeline of stages known only at run time (loaded from a config), checked now, when it is built:
 * `validate` from `source` through each stage to `sink`. Its `output` is every column available at its end.
 */
export const make = <In extends TypeMap, Out extends TypeMap>(
  stages: ReadonlyArray<Stage.Stage<any, any, never>>,
  schemas: { readonly source: ArrowSchema<In>; readonly sink: Sink & { readonly input: ArrowSchema<Out> } }
): Effect.Effect<Pipeline<In, Out, never>, PipelineError> =>
  Effect.map(validate(stages, schemas.source, schemas.sink), (output) => ({
    ...build<In, Out, never>(stages),
    input: schemas.source,
    output: output as ArrowSchema<Out>
  }))

/** Runs one batch through the stages in order (each checks its input on entry). */
export const runBatch = <In extends TypeMap, Out extends TypeMap, R>(pipeline: Pipeline<In, Out, R>, batch: RecordBatch<In>): Effect.Effect<RecordBatch<Out>, Stage.StageError, R> =>
  Effect.reduce(pipeline.stages, (): RecordBatch => batch, (b, stage) => stage.run(b)) as Effect.Effect<RecordBatch<Out>, Stage.StageError, R>

const merge = (a: ArrowSchema, b: ArrowSchema): ArrowSchema => {
  const extra = b.fields.filter((f) => !a.fields.some((g) => g.name === f.name))
  return new ArrowSchema([...a.fields, ...extra], a.metadata)
}

/** Runs every batch of `source` through the stages in order, after `validate`. */
export const run = <In extends TypeMap, Out extends TypeMap, R, E, R0>(
  pipeline: Pipeline<In, Out, R>,
  source: Stream.Stream<RecordBatch<In>, E, R0>,
  options?: { readonly sourceSchema?: ArrowSchema }
): Stream.Stream<RecordBatch<Out>, E | PipelineError | Stage.StageError, R | R0> =>
  Stream.unwrap(
    Effect.as(
      validate(pipeline.stages, options?.sourceSchema),
      pipeline.stages.reduce<Stream.Stream<RecordBatch, any, any>>(
        (stream, stage) => Stream.mapEffect(stream, (batch) => stage.run(batch)),
        source
      ) as Stream.Stream<RecordBatch<Out>, E | Stage.StageError, R | R0>
    )
  )
