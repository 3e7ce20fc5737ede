/**
 * Stress: every native kernel on random shapes in a long loop, against the stock kernels or composites, while
 *   - a second CPU-heavy process competes for the cores (a loaded machine is where pool races show),
 *   - the GEMM switches between BLAS (when it loaded) and the addon's own on every case,
 *   - the wasm heap is made to grow between calls and inside calls (in `makeOutput`, after a kernel has
 *     looked its inputs up and before it reads HEAPU8), so a stale view of the heap would be caught.
 * Each case also checks that the kernel wrote nothing but its outputs: its inputs and a set of bystander
 * tensors (allocated before and during the run, so they sit all over the heap) keep their bytes.
 * ASan cannot see inside the wasm heap (one big mapping to it); these checks are what can.
 */
import { spawn, type ChildProcess } from "node:child_process"
import * as tf from "@tensorflow/tfjs"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { AdamW, Attention, Decode, Fused, Kernels, type Native } from "../src/index.js"
import { lcg, native, relErr, run, useNativeKernels } from "./helpers.js"

interface Heap {
  readonly wasm: { HEAPU8: Uint8Array; _malloc(bytes: number): number }
  makeOutput(shape: ReadonlyArray<number>, dtype: tf.DataType): tf.TensorInfo
}

const GROW_BYTES = 4 << 20 // a block the free list cannot serve, so holding it grows the heap
const MAX_HELD = 48 // at most ~192 MiB held, whatever the case count

/** Holds heap blocks (never freed until the end) so that each new one grows the memory. */
const grower = (heap: Heap) => {
  const held: Array<number> = []
  let growths = 0
  return {
    grow: () => {
      if (held.length >= MAX_HELD) return
      const before = heap.wasm.HEAPU8.length
      held.push(heap.wasm._malloc(GROW_BYTES))
      if (heap.wasm.HEAPU8.length > before) growths++
    },
    growths: () => growths
  }
}

type Case = { readonly name: string; readonly inputs: () => Array<tf.Tensor>; readonly f: (...xs: Array<tf.Tensor>) => Array<tf.Tensor>; readonly tol: number }

const rnd = (shape: Array<number>, seed: number, scale = 1) => tf.mul(tf.randomNormal(shape, 0, 1, "float32", seed), scale)
/** Values of f(xs) and of the gradients of Σ f(xs)·dy wrt xs (when `grads`). */
const withGrads = (f: (...xs: Array<tf.Tensor>) => tf.Tensor, seed: number) => (...xs: Array<tf.Tensor>): Array<tf.Tensor> => {
  const y = f(...xs)
  const dy = rnd(y.shape, seed + 7)
  return [y, ...tf.grads((...a: Array<tf.Tensor>) => tf.sum(tf.mul(f(...a), dy)))(xs)]
}
const rotation = (hd: number) => {
  const m = new Float32Array(hd * hd), h = hd / 2
  for (let j = 0; j < h; j++) {
    m[(j + h) * hd + j] = -1
    m[j * hd + j + h] = 1
  }
  return tf.tensor2d(m, [hd, hd])
}
const causalMask = (G: number, T: number, past: number) => {
  const S = past + T, m = new Float32Array(G * T * S)
  for (let r = 0; r < G * T; r++) m.fill(-1e9, r * S + past + (r % T) + 1, (r + 1) * S)
  return tf.tensor4d(m, [1, 1, G * T, S])
}

/** One random case for each native kernel family, drawn from `rand`. */
const makeCase = (rand: () => number, seed: number): Case => {
  const pick = (n: number) => 1 + Math.floor(rand() * n)
  const kind = Math.floor(rand() * 9)
  switch (kind) {
    case 0: {
      const [B, m, n, k] = [pick(4), pick(150), pick(150), pick(300)]
      const ta = rand() < 0.3, tb = rand() < 0.3, bcast = rand() < 0.3
      return {
        name: `matMul [${B}] ${m}×${k}×${n} ta=${ta} tb=${tb} bcast=${bcast}`, tol: 1e-4,
        inputs: () => [rnd(ta ? [B, k, m] : [B, m, k], seed), rnd(bcast ? (tb ? [n, k] : [k, n]) : tb ? [B, n, k] : [B, k, n], seed + 1)],
        f: (a, b) => [tf.matMul(a, b, ta, tb)]
      }
    }
    case 1: {
      const shape = [pick(30), pick(40), pick(70)], other = shape.map((d) => (rand() < 0.3 ? 1 : d))
      const op = [tf.add, tf.sub, tf.mul, tf.div][Math.floor(rand() * 4)]
      return { name: `binary ${op.name} [${shape}] [${other}]`, tol: 1e-5, inputs: () => [rnd(shape, seed), tf.add(rnd(other, seed + 1), 3)], f: (a, b) => [op(a, b)] }
    }
    case 2: {
      const shape = [pick(50), pick(300)], axis = Math.floor(rand() * 2)
      return { name: `exp, sum axis ${axis} [${shape}]`, tol: 1e-4, inputs: () => [rnd(shape, seed, 3)], f: (x) => [tf.exp(x), tf.sum(x, axis), tf.sum(x)] }
    }
    case 3: {
      const [V, W, n] = [pick(200), pick(64), pick(300)]
      const ids = Array.from({ length: n }, () => Math.floor(rand() * V))
      return {
        name: `gather + segment sum V=${V} W=${W} n=${n}`, tol: 1e-5,
        inputs: () => [rnd([V, W], seed), rnd([n, W], seed + 1)],
        f: (x, dy) => {
          const idx = tf.tensor1d(ids, "int32")
          // The stock wasm backend has no UnsortedSegmentSum: its side is the one-hot product it stands for.
          const grad = Kernels.installed() ? tf.unsortedSegmentSum(dy, idx, V) : tf.matMul(tf.oneHot(idx, V), dy, true, false)
          return [tf.gather(x, idx), grad]
        }
      }
    }
    case 4: {
      const shape = [pick(400), pick(300)]
      const h: AdamW.Hyper = { beta1: 0.9, beta2: 0.95, c1: 0.1, c2: 0.05, epsilon: 1e-8, decay: 0.999, learningRate: 1e-3, scale: 0.5 }
      return { name: `adamw [${shape}]`, tol: 1e-6, inputs: () => [rnd(shape, seed), rnd(shape, seed + 1), tf.abs(rnd(shape, seed + 2)), rnd(shape, seed + 3)], f: (p, m, v, g) => AdamW.update(p, m, v, g, h) }
    }
    case 5: {
      const [n, w] = [pick(600), pick(300)]
      return { name: `rmsNorm + swiglu [${n}, ${w}]`, tol: 1e-4, inputs: () => [rnd([n, w], seed, 3), tf.add(rnd([w], seed + 1, 0.2), 1)], f: withGrads((x, g) => Fused.swiglu(Fused.rmsNorm(x, g, 1e-6), x), seed) }
    }
    case 6: {
      const [b, t, h, hd] = [pick(4), pick(60), pick(4), 2 * pick(24)]
      const rot = rotation(hd)
      return {
        name: `rope [${b}, ${t}, ${h}, ${hd}]`, tol: 1e-5,
        inputs: () => [rnd([b, t, h, hd], seed), rnd([1, t, 1, hd], seed + 1), rnd([1, t, 1, hd], seed + 2)],
        f: (x, c, s) => withGrads((xx) => Fused.rope(xx as tf.Tensor4D, c, s, rot), seed)(x)
      }
    }
    case 7: {
      const [B, H, G, T, hd] = [pick(3), pick(3), pick(2), pick(150), pick(48)], past = rand() < 0.5 ? 0 : pick(60)
      const m = causalMask(G, T, past)
      return {
        name: `causal attention B=${B} H=${H} G=${G} T=${T} past=${past} hd=${hd}`, tol: 1e-4,
        inputs: () => [rnd([B, H, G * T, hd], seed, 0.3), rnd([B, H, past + T, hd], seed + 1), rnd([B, H, past + T, hd], seed + 2)],
        f: withGrads((q, k, v) => Attention.causal(q as tf.Tensor4D, k as tf.Tensor4D, v as tf.Tensor4D, m, past), seed)
      }
    }
    default: {
      const [B, H, Q, D, P, Sp, S] = [pick(9), pick(3), pick(3), pick(64), pick(3), pick(40), pick(30)]
      const cap = S + Math.floor(rand() * 5)
      return {
        name: `decode + cache write B=${B} H=${H} Q=${Q} D=${D} P=${P} Sp=${Sp} S=${S} cap=${cap}`, tol: 1e-5,
        inputs: () => [rnd([B, H, Q, D], seed), rnd([P, H, Sp, D], seed + 1), rnd([P, H, Sp, D], seed + 2), rnd([B, H, S, D], seed + 3)],
        f: (q, pk, pv, kv) => {
          const x = {
            q: q as tf.Tensor4D, promptK: pk as tf.Tensor4D, promptV: pv as tf.Tensor4D,
            promptOf: tf.tensor1d(Array.from({ length: B }, (_, b) => b % P), "int32"), promptBias: tf.zeros([B, 1, 1, Sp]) as tf.Tensor4D,
            mask: tf.zeros([B, 1, Q, S]) as tf.Tensor4D
          }
          if (!Decode.available()) return [Decode.composite({ ...x, k: kv as tf.Tensor4D, v: kv as tf.Tensor4D })]
          // Native: the keys go into a larger preallocated cache in place, and attention reads the S filled slots.
          const cache = tf.zeros([B, H, cap, D]) as tf.Tensor4D
          Decode.write(cache, kv as tf.Tensor4D, 0)
          return [Decode.attend({ ...x, k: cache, v: cache })]
        }
      }
    }
  }
}

const bytes = (t: tf.Tensor) => new Uint8Array((t.dataSync() as Float32Array).slice().buffer)
const same = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i])

/**
 * Runs the pool's own contract check on many short jobs (job boundaries are where a late worker can race).
 * Before the pool published jobs through a CLOSED step this found ~10 violations per 200,000 jobs on 2 cores.
 */
const poolViolations = (addon: Native.Addon): number =>
  ([[400_000, 8], [400_000, 3], [50_000, 64]] as const).reduce((sum, [jobs, max]) => sum + addon.poolCheck(jobs, max, jobs + max), 0)

describe.skipIf(!native.ok)("the native thread pool", () => {
  it("runs on the GEMM its test project names", () => {
    if (!native.ok) return
    const info = native.addon.info()
    if (process.env.R1FLOW_NO_BLAS === "1") expect(info.blasError).toBe("R1FLOW_NO_BLAS is set")
    console.log(`GEMM: ${info.blas ?? `own (${info.blasError})`}, ${info.threads} thread(s)`)
    expect(info.blas === null).toBe(info.blasError !== "")
  })

  it("runs each chunk of a job exactly once and returns only when all are done", () => {
    if (native.ok) expect(poolViolations(native.addon)).toBe(0)
  })
})

describe.skipIf(!native.ok)("native kernels under stress: loaded cores, both GEMM paths, a growing heap", () => {
  useNativeKernels()
  let rival: ChildProcess | undefined

  beforeAll(() => {
    // Busy until killed, and never longer than two minutes should the test die first.
    rival = spawn(process.execPath, ["-e", "const end = Date.now() + 120000; while (Date.now() < end) {}"], { stdio: "ignore" })
  })
  afterAll(() => {
    rival?.kill("SIGKILL")
  })

  it("the thread pool runs each chunk exactly once and returns only when all are done, under load", () => {
    if (native.ok) expect(poolViolations(native.addon)).toBe(0)
  })

  it("every kernel matches the stock path on random shapes, writes only its outputs, and survives heap growth", () => {
    if (!native.ok) return
    const addon = native.addon
    const heap = tf.backend() as unknown as Heap
    const g = grower(heap)
    const makeOutput = heap.makeOutput.bind(heap)
    let calls = 0
    // Growth inside a kernel: every 7th output allocation first takes a block that grows the memory.
    heap.makeOutput = (shape, dtype) => {
      if (++calls % 7 === 0) g.grow()
      return makeOutput(shape, dtype)
    }
    const blas = addon.info().blas !== null
    const bystanders: Array<[tf.Tensor, Uint8Array]> = []
    const addBystander = (seed: number) => {
      const t = rnd([1 + (seed % 97), 33], seed)
      bystanders.push([t, bytes(t)])
    }
    try {
      const rand = lcg(11)
      for (let i = 0; i < 8; i++) addBystander(1000 + i)
      const CASES = 600
      for (let n = 0; n < CASES; n++) {
        const c = makeCase(rand, 10 * n + 1)
        const useBlas = blas && n % 2 === 0
        addon.useBlas(useBlas)
        const compute = () =>
          tf.tidy(() => {
            const xs = c.inputs()
            const before = xs.map(bytes)
            const ys = c.f(...xs).map((y) => y.dataSync() as Float32Array)
            xs.forEach((x, i) => expect(same(bytes(x), before[i]), `${c.name}: input ${i} was written`).toBe(true))
            return ys
          })
        const fast = compute()
        if (n % 3 === 0) g.grow() // growth between calls
        const stock = run(compute, true)
        fast.forEach((y, i) => expect(relErr(y, stock[i]), `${c.name} (${useBlas ? "BLAS" : "own GEMM"}): output ${i}`).toBeLessThan(c.tol))
        for (const [t, b] of bystanders) expect(same(bytes(t), b), `${c.name}: a bystander tensor was written`).toBe(true)
        if (n % 20 === 0) addBystander(2000 + n)
      }
      expect(g.growths(), "the wasm memory grew during the run").toBeGreaterThan(10)
    } finally {
      heap.makeOutput = makeOutput
      addon.useBlas(blas)
      tf.dispose(bystanders.map(([t]) => t))
    }
  }, 240_000)
})
