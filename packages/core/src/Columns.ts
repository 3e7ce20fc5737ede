/**
 * Zero-copy access to the `List<Int32>` / `List<Float32>` columns that carry token ids and
 * per-token values, and conversion to the padded `[B, T]` arrays a model consumes.
 *
 * A list column is a flat values array plus `B + 1` offsets. Reading it never copies the values:
 * a view is a `subarray` of the column's own buffer, correct on sliced batches (Arrow keeps the
 * parent's offsets and a row offset; the view rebases them).
 */
import {
  Field,
  Float32,
  Int32,
  List,
  makeData,
  makeVector,
  Utf8,
  type Data,
  type Vector
} from "apache-arrow"

/** Flat values plus offsets: row `i` is `values.subarray(offsets[i] - offsets[0], offsets[i+1] - offsets[0])`. */
export interface ListView<A extends Int32Array | Float32Array> {
  /** Values of all rows, back to back (a view into the column's buffer when it is one chunk). */
  readonly values: A
  /** `rows + 1` offsets into `values`, starting at 0. */
  readonly offsets: Int32Array
  readonly rows: number
}

/** Row `i` of a list view, as a subarray (no copy). */
export const row = <A extends Int32Array | Float32Array>(view: ListView<A>, i: number): A =>
  view.values.subarray(view.offsets[i], view.offsets[i + 1]) as A

/** Length of row `i`. */
export const rowLength = (view: ListView<Int32Array | Float32Array>, i: number): number => view.offsets[i + 1] - view.offsets[i]

const dataView = <A extends Int32Array | Float32Array>(d: Data<List<Int32>> | Data<List<Float32>>): ListView<A> => {
  // Arrow JS slices the offsets buffer itself on `slice` (and leaves the child unsliced), so
  // `d.offset` must not be applied again; the offsets are absolute into the child's values.
  const raw = d.valueOffsets.subarray(0, d.length + 1)
  const base = raw[0]
  const child = d.children[0]
  const values = (child.values as A).subarray(base, raw[raw.length - 1]) as A
  // Rebasing offsets copies B+1 ints, never the values.
  const offsets = base === 0 ? raw : raw.map((o: number) => o - base)
  return { values, offsets, rows: d.length }
}

const concatViews = <A extends Int32Array | Float32Array>(views: Array<ListView<A>>, make: (n: number) => A): ListView<A> => {
  const total = views.reduce((n, v) => n + v.values.length, 0)
  const rows = views.reduce((n, v) => n + v.rows, 0)
  const values = make(total)
  const offsets = new Int32Array(rows + 1)
  let at = 0, r = 0
  for (const v of views) {
    values.set(v.values, at)
    for (let i = 1; i <= v.rows; i++) offsets[r + i] = at + v.offsets[i]
    at += v.values.length
    r += v.rows
  }
  return { values, offsets, rows }
}

/** Views a `List<Int32>` column. One chunk: zero copy. Several chunks: one concatenating copy. */
export const int32List = (vector: Vector<List<Int32>>): ListView<Int32Array> => {
  const views = vector.data.map((d) => dataView<Int32Array>(d))
  return views.length === 1 ? views[0] : concatViews(views, (n) => new Int32Array(n))
}

/** Views a `List<Float32>` column. One chunk: zero copy. Several chunks: one concatenating copy. */
export const float32List = (vector: Vector<List<Float32>>): ListView<Float32Array> => {
  const views = vector.data.map((d) => dataView<Float32Array>(d))
  return views.length === 1 ? views[0] : concatViews(views, (n) => new Float32Array(n))
}

/** Builds a `List<Int32>` column over `values` and `offsets` without copying them. */
export const makeInt32List = (values: Int32Array, offsets: Int32Array): Vector<List<Int32>> => {
  const type = new List(new Field("item", new Int32(), false))
  const child = makeData({ type: new Int32(), length: values.length, nullCount: 0, data: values })
  return makeVector(makeData({ type, length: offsets.length - 1, nullCount: 0, valueOffsets: offsets, child }))
}

/** Builds a `List<Float32>` column over `values` and `offsets` without copying them. */
export const makeFloat32List = (values: Float32Array, offsets: Int32Array): Vector<List<Float32>> => {
  const type = new List(new Field("item", new Float32(), false))
  const child = makeData({ type: new Float32(), length: values.length, nullCount: 0, data: values })
  return makeVector(makeData({ type, length: offsets.length - 1, nullCount: 0, valueOffsets: offsets, child }))
}

/** Builds a list column from per-row arrays (one copy into a flat buffer). */
export const int32ListFromRows = (rows: ReadonlyArray<ArrayLike<number>>): Vector<List<Int32>> => {
  const offsets = new Int32Array(rows.length + 1)
  for (let i = 0; i < rows.length; i++) offsets[i + 1] = offsets[i] + rows[i].length
  const values = new Int32Array(offsets[rows.length])
  for (let i = 0; i < rows.length; i++) values.set(rows[i], offsets[i])
  return makeInt32List(values, offsets)
}

/** Builds a `List<Float32>` column from per-row arrays (one copy into a flat buffer). */
export const float32ListFromRows = (rows: ReadonlyArray<ArrayLike<number>>): Vector<List<Float32>> => {
  const offsets = new Int32Array(rows.length + 1)
  for (let i = 0; i < rows.length; i++) offsets[i + 1] = offsets[i] + rows[i].length
  const values = new Float32Array(offsets[rows.length])
  for (let i = 0; i < rows.length; i++) values.set(rows[i], offsets[i])
  return makeFloat32List(values, offsets)
}

/** A `Float32` column over `values` (no copy); NaN stays NaN (not null). */
export const makeFloat32 = (values: Float32Array): Vector<Float32> =>
  makeVector(makeData({ type: new Float32(), length: values.length, nullCount: 0, data: values }))

/** An `Int32` column over `values` (no copy). */
export const makeInt32 = (values: Int32Array): Vector<Int32> =>
  makeVector(makeData({ type: new Int32(), length: values.length, nullCount: 0, data: values }))

/** A `Utf8` column from strings (`null` allowed for nullable columns). */
export const makeUtf8 = (values: ReadonlyArray<string | null>): Vector<Utf8> => {
  const encoder = new TextEncoder()
  const parts = values.map((v) => (v === null ? new Uint8Array(0) : encoder.encode(v)))
  const offsets = new Int32Array(values.length + 1)
  for (let i = 0; i < parts.length; i++) offsets[i + 1] = offsets[i] + parts[i].length
  const data = new Uint8Array(offsets[values.length])
  for (let i = 0; i < parts.length; i++) data.set(parts[i], offsets[i])
  const nulls = values.reduce((n, v) => n + (v === null ? 1 : 0), 0)
  let nullBitmap: Uint8Array | undefined
  if (nulls > 0) {
    nullBitmap = new Uint8Array(Math.ceil(values.length / 8))
    values.forEach((v, i) => { if (v !== null) nullBitmap![i >> 3] |= 1 << (i & 7) })
  }
  return makeVector(makeData({ type: new Utf8(), length: values.length, nullCount: nulls, valueOffsets: offsets, data, nullBitmap }))
}

/** A Float32 column's values as one `Float32Array` (zero copy when one chunk). */
export const float32Values = (vector: Vector<Float32>): Float32Array => {
  if (vector.data.length === 1) {
    const d = vector.data[0]
    // Fixed-width buffers are already sliced by Arrow JS; `d.offset` is bookkeeping only.
    return (d.values as Float32Array).subarray(0, d.length)
  }
  return Float32Array.from(vector.toArray() as Float32Array)
}

/** An Int32 column's values as one `Int32Array` (zero copy when one chunk). */
export const int32Values = (vector: Vector<Int32>): Int32Array => {
  if (vector.data.length === 1) {
    const d = vector.data[0]
    return (d.values as Int32Array).subarray(0, d.length)
  }
  return Int32Array.from(vector.toArray() as Int32Array)
}

/** A padded `[B, T]` token matrix and its mask (1 where a real token sits). */
export interface Padded {
  /** Row-major `[B, T]`. */
  readonly ids: Int32Array
  /** Row-major `[B, T]`; 1 for real tokens, 0 for padding. */
  readonly mask: Float32Array
  readonly batch: number
  readonly time: number
}

/**
 * Pads each row of `view` to `time` (default: the longest row) with `padId`, on the right
 * (or on the left, which keeps the last prompt token of every row at the same position for generation).
 * Rows longer than `time` are an error, never silently cut.
 */
export const toPadded = (
  view: ListView<Int32Array>,
  options: { readonly padId: number; readonly time?: number; readonly side?: "right" | "left" }
): Padded => {
  let longest = 0
  for (let i = 0; i < view.rows; i++) longest = Math.max(longest, rowLength(view, i))
  const time = options.time ?? longest
  if (longest > time) throw new RangeError(`a row has ${longest} tokens, more than the padded length ${time}`)
  const ids = new Int32Array(view.rows * time).fill(options.padId)
  const mask = new Float32Array(view.rows * time)
  for (let i = 0; i < view.rows; i++) {
    const r = row(view, i)
    const start = i * time + (options.side === "left" ? time - r.length : 0)
    ids.set(r, start)
    mask.fill(1, start, start + r.length)
  }
  return { ids, mask, batch: view.rows, time }
}
