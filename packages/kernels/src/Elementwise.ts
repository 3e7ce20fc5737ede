/**
 * Elementwise kernels for the wasm and cpu backends on the native addon, in place on their memory (`Memory`): `Exp` (a SIMD
 * polynomial, ≤ 2 ulp), `Add` / `Sub` / `Multiply` / `RealDiv` with tfjs broadcasting, and `GatherV2` (row
 * copies; the stock kernel walks every element) and `Sum` over a run of neighbouring axes (the stock kernel
 * transposes first when they are not the innermost). Each splits large tensors over the addon's threads and
 * defers to the kernel registered before it for dtypes or attributes it does not handle.
 */
import * as tf from "@tensorflow/tfjs"
import * as Memory from "./Memory.js"
import type { Addon } from "./Native.js"

const product = (xs: ReadonlyArray<number>) => xs.reduce((p, d) => p * d, 1)

/** `Exp` on float32. */
export const exp = (addon: Addon, previous: tf.KernelFunc): tf.KernelFunc => (args) => {
  const mem = Memory.of(args.backend, addon)
  const { x } = args.inputs as { x: tf.TensorInfo }
  if (x.dtype !== "float32") return previous(args)
  const out = mem.output(x.shape, "float32")
  const n = product(x.shape)
  if (n > 0) addon.exp(mem.heap(), mem.offset(x), mem.offset(out), n)
  return out
}

/** `Square` on float32 as the addon's product x·x (bitwise the stock kernels' x·x, rounded to float32 once). */
export const square = (addon: Addon, previous: tf.KernelFunc): tf.KernelFunc => (args) => {
  const mem = Memory.of(args.backend, addon)
  const { x } = args.inputs as { x: tf.TensorInfo }
  if (x.dtype !== "float32") return previous(args)
  const out = mem.output(x.shape, "float32")
  const n = product(x.shape)
  if (n === 0) return out
  desc[0] = 1
  desc[1] = n
  desc[2] = 1
  desc[3] = 1
  addon.binary(mem.heap(), binaryOps.Multiply, mem.offset(x), mem.offset(x), mem.offset(out), desc)
  return out
}

/** Binary ops by the addon's op code. */
export const binaryOps = { Add: 0, Sub: 1, Multiply: 2, RealDiv: 3 } as const

const desc = new Int32Array(1 + 3 * 8)

/**
 * Output shape and per-operand element strides (0 where broadcast), with size-1 dims dropped and
 * neighbouring dims merged where both operands walk them contiguously (or both broadcast them).
 */
export const collapse = (aShape: ReadonlyArray<number>, bShape: ReadonlyArray<number>): { shape: Array<number>; sa: Array<number>; sb: Array<number> } => {
  const out = tf.broadcast_util.assertAndGetBroadcastShape(aShape as Array<number>, bShape as Array<number>)
  const rank = out.length
  const strides = (shape: ReadonlyArray<number>) => {
    const s = new Array<number>(rank).fill(0)
    let st = 1
    for (let d = shape.length - 1; d >= 0; d--) {
      s[d + rank - shape.length] = shape[d] === 1 ? 0 : st
      st *= shape[d]
    }
    return s
  }
  const fa = strides(aShape), fb = strides(bShape)
  const shape: Array<number> = [], sa: Array<number> = [], sb: Array<number> = []
  for (let d = 0; d < rank; d++) {
    if (out[d] === 1) continue
    const last = shape.length - 1
    if (last >= 0 && sa[last] === fa[d] * out[d] && sb[last] === fb[d] * out[d]) {
      shape[last] *= out[d]
      sa[last] = fa[d]
      sb[last] = fb[d]
    } else {
      shape.push(out[d])
      sa.push(fa[d])
      sb.push(fb[d])
    }
  }
  if (shape.length === 0) return { shape: [1], sa: [0], sb: [0] }
  return { shape, sa, sb }
}

/** `Add`, `Sub`, `Multiply` or `RealDiv` on two float32 tensors with broadcasting. */
export const binary = (addon: Addon, op: number, previous: tf.KernelFunc): tf.KernelFunc => (args) => {
  const mem = Memory.of(args.backend, addon)
  const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo }
  if (a.dtype !== "float32" || b.dtype !== "float32") return previous(args)
  const outShape = tf.broadcast_util.assertAndGetBroadcastShape(a.shape, b.shape)
  const { shape, sa, sb } = collapse(a.shape, b.shape)
  if (shape.length > 8) return previous(args)
  const out = mem.output(outShape, "float32")
  if (product(outShape) === 0) return out
  const r = shape.length
  desc[0] = r
  for (let d = 0; d < r; d++) {
    desc[1 + d] = shape[d]
    desc[1 + r + d] = sa[d]
    desc[1 + 2 * r + d] = sb[d]
  }
  addon.binary(mem.heap(), op, mem.offset(a), mem.offset(b), mem.offset(out), desc)
  return out
}

/** `GatherV2` with `batchDims` 0 on float32 / int32 params and int32 indices. */
export const gather = (addon: Addon, previous: tf.KernelFunc): tf.KernelFunc => (args) => {
  const mem = Memory.of(args.backend, addon)
  const { x, indices } = args.inputs as { x: tf.TensorInfo; indices: tf.TensorInfo }
  const { axis, batchDims } = args.attrs as unknown as { axis: number; batchDims?: number }
  if ((batchDims ?? 0) !== 0 || (x.dtype !== "float32" && x.dtype !== "int32") || indices.dtype !== "int32") return previous(args)
  const ax = tf.util.parseAxisParam(axis, x.shape)[0]
  const outer = product(x.shape.slice(0, ax)), dim = x.shape[ax], inner = product(x.shape.slice(ax + 1))
  const nIdx = product(indices.shape)
  const out = mem.output([...x.shape.slice(0, ax), ...indices.shape, ...x.shape.slice(ax + 1)], x.dtype)
  if (outer * nIdx * inner === 0) return out
  const bad = addon.gather(mem.heap(), 4, mem.offset(x), outer, dim, inner, mem.offset(indices), nIdx, mem.offset(out))
  if (bad >= 0) {
    ;(args.backend as unknown as { disposeData(dataId: unknown): boolean }).disposeData(out.dataId)
    throw new Error(`GatherV2: the index value ${bad} is not in [0, ${dim - 1}]`)
  }
  return out
}

/** `Sum` of float32 over axes that are neighbours in the shape (`[outer, reduced…, inner]`). */
export const sum = (addon: Addon, previous: tf.KernelFunc): tf.KernelFunc => (args) => {
  const mem = Memory.of(args.backend, addon)
  const { x } = args.inputs as { x: tf.TensorInfo }
  const { axis, keepDims } = args.attrs as unknown as { axis: number | Array<number>; keepDims: boolean }
  if (x.dtype !== "float32") return previous(args)
  const axes = [...tf.util.parseAxisParam(axis, x.shape)].sort((p, q) => p - q)
  if (axes.length === 0 || axes.some((a, i) => i > 0 && a !== axes[i - 1] + 1)) return previous(args)
  const first = axes[0], last = axes[axes.length - 1]
  const outer = product(x.shape.slice(0, first)), dim = product(x.shape.slice(first, last + 1)), inner = product(x.shape.slice(last + 1))
  const outShape = keepDims ? x.shape.map((d, i) => (i >= first && i <= last ? 1 : d)) : [...x.shape.slice(0, first), ...x.shape.slice(last + 1)]
  const out = mem.output(outShape, "float32")
  if (outer * inner === 0) return out
  if (dim === 0) mem.view(out).fill(0)
  else addon.sum(mem.heap(), mem.offset(x), outer, dim, inner, mem.offset(out))
  return out
}

type MaxAddon = Addon & { rowMax(heap: Uint8Array | null, xOff: number, rows: number, dim: number, outOff: number): void }

/**
 * `Max` of float32 over the innermost axes (logSoftmax's row maximum), bitwise the cpu kernel's (NaN where a
 * row holds one). Installed on cpu only: the wasm kernel is native already, and its NaN handling differs.
 */
export const max = (addon: Addon, previous: tf.KernelFunc): tf.KernelFunc => (args) => {
  const { x } = args.inputs as { x: tf.TensorInfo }
  const { reductionIndices, keepDims } = args.attrs as unknown as { reductionIndices: number | Array<number>; keepDims: boolean }
  if (x.dtype !== "float32" || x.shape.length === 0) return previous(args)
  const axes = [...tf.util.parseAxisParam(reductionIndices, x.shape)].sort((p, q) => p - q)
  const first = axes[0], rank = x.shape.length
  if (axes.length === 0 || axes.some((a, i) => a !== first + i) || axes[axes.length - 1] !== rank - 1) return previous(args)
  const rows = product(x.shape.slice(0, first)), dim = product(x.shape.slice(first))
  if (rows * dim === 0) return previous(args)
  const mem = Memory.of(args.backend, addon)
  const out = mem.output(keepDims ? x.shape.map((d, i) => (i >= first ? 1 : d)) : x.shape.slice(0, first), "float32")
  ;(addon as MaxAddon).rowMax(mem.heap(), mem.offset(x), rows, dim, mem.offset(out))
  return out
}

type SegmentAddon = Addon & {
  segmentSum(heap: Uint8Array | null, xOff: number, idsOff: number, rows: number, inner: number, segments: number, outOff: number): void
}

/**
 * `UnsortedSegmentSum` (float32 data, int32 ids of one axis), which the wasm backend lacks: it is the gradient
 * of `gather`, so with it an embedding lookup differentiates as a plain `tf.gather`. Rows add in index order
 * (deterministic); ids outside `[0, numSegments)` are dropped, as tfjs's other backends do.
 */
export const segmentSum = (addon: Addon): tf.KernelFunc => (args) => {
  const mem = Memory.of(args.backend, addon)
  const { x, segmentIds } = args.inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo }
  const { numSegments } = args.attrs as unknown as { numSegments: number }
  if (x.dtype !== "float32" || segmentIds.dtype !== "int32" || segmentIds.shape.length !== 1 || segmentIds.shape[0] !== x.shape[0]) {
    throw new Error(`UnsortedSegmentSum: native kernel takes float32 x [N, ...] and int32 ids [N]; got ${x.dtype} [${x.shape}] and ${segmentIds.dtype} [${segmentIds.shape}]`)
  }
  const inner = product(x.shape.slice(1))
  const out = mem.output([numSegments, ...x.shape.slice(1)], "float32")
  if (numSegments * inner === 0) return out
  ;(addon as SegmentAddon).segmentSum(mem.heap(), mem.offset(x), mem.offset(segmentIds), x.shape[0], inner, numSegments, mem.offset(out))
  return out
}
