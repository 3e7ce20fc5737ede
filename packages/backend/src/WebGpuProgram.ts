/**
 * What the WGSL kernels of this package share: their workgroup width, tfjs's uniform entry, and the two
 * program shapes they are built on (a workgroup per row, a thread per element). The shader body comes from
 * each kernel; this only fixes how it is dispatched.
 */
import type { WebGPUProgram } from "@tensorflow/tfjs-backend-webgpu"

/** Threads per workgroup. */
export const WG = 64
// WebGPU's guaranteed limit of workgroups per dispatch dimension: more rows go to the y dimension.
const MAX_GROUPS = 65535

/** A uniform of a program (tfjs's `ProgramUniform` entry). */
export type Uniform = { type: "int32" | "float32"; data: Array<number> }

/** The WGSL line giving a per-row program's row (`perRow` folds rows past 65535 into the y dimension). */
export const ROW = "let row = i32(workgroupId.x + workgroupId.y * numWorkgroups.x);"

/** What a program is made of besides its dispatch: `uniforms` declares the `uniforms.*` fields, `code` the WGSL with `main`. */
export interface Parts {
  readonly shaderKey: string
  readonly variableNames: Array<string>
  readonly outputShape: Array<number>
  readonly uniforms: string
  readonly code: string
}

const program = (p: Parts, dispatch: [number, number, number]): WebGPUProgram => ({
  variableNames: p.variableNames,
  outputShape: p.outputShape,
  shaderKey: p.shaderKey,
  uniforms: p.uniforms,
  workgroupSize: [WG, 1, 1],
  dispatchLayout: { x: p.outputShape.map((_, i) => i) },
  dispatch,
  getUserCode: () => p.code
})

/** One workgroup of `WG` threads per row, `rows` of them; the shader finds its row with `ROW`. */
export const perRow = (p: Parts, rows: number): WebGPUProgram => program(p, [Math.min(rows, MAX_GROUPS), Math.ceil(rows / MAX_GROUPS), 1])

/** One thread per item, `n` of them, in workgroups of `WG`; `main(index)` gets the item. */
export const perThread = (p: Parts, n: number): WebGPUProgram => program(p, [Math.ceil(n / WG), 1, 1])
