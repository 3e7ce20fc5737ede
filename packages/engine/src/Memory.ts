/**
 * Memory accounting: what a run will hold, estimated from its model's shape before any tensor exists (the
 * backend is chosen by it), and what each recipe stage held at its peak (the manifest and `perf.jsonl`).
 *
 * The estimate (`footprint`, the input of `Backend.estimate`; float32 throughout):
 *
 *   P          = Σ over the weights of `Transformer.weightShapes(config)` of their shapes' products
 *   trainable  = P in full training; under LoRA (rank r) Σ over the adapted Linears [out, in] of every block of r·(in + out)
 *   reference  = P when a `grpo` stage has `update.loss.beta` > 0 (π_ref is a clone of the policy); 0 with β = 0
 *                or under LoRA (π_ref is the base itself with the adapters off)
 *   bytes      = 4·(P + reference) + 12·trainable   (weights; a gradient and two AdamW moments per trainable one)
 *
 * Activations, rollouts and caches are not estimated: `Backend.WASM_BUDGET` leaves a quarter of the wasm
 * heap for them. A `student` stage's fresh model is not counted either (it replaces the policy).
 *
 * The measurement, per stage (`start` … `Meter.sample`):
 *
 *   peak RSS    = max over the stage of the process's resident set. On Linux the kernel's high-water mark
 *                 (`VmHWM` of /proc/self/status), reset to the current RSS at the stage's start by writing 5 to
 *                 /proc/self/clear_refs (that value touches no page state: it only resets the mark); where
 *                 that is refused (or not Linux), `process.resourceUsage().maxRSS`, the peak since the process
 *                 began (`rssSince: "process"` says so).
 *   peak tensor = max over every tensor allocation in the stage of `tf.memory().numBytes` just after it, so
 *                 the peak inside a step (activations, gradients), not only what is left between steps.
 *
 * The two are not ordered: tfjs counts a reshape's bytes again though it shares its buffer, so the tensor
 * figure can exceed the memory really held; and on wasm the heap grows and never shrinks, so RSS holds
 * the heap's high-water mark. What always holds: each is at least what was live when sampled (the policy's
 * weights, for one), and within a stage the sampled peaks never decrease.
 */
import type { Backend } from "@r1flow/backend"
import { Lora, Transformer } from "@r1flow/model"
import * as tf from "@tensorflow/tfjs"
import { Effect, type Scope } from "effect"
import { readFileSync, writeFileSync } from "node:fs"
import type * as Recipe from "./Recipe.js"

// ---------------------------------------------------------------------------------------------------
// The estimate.

/** P: the weights of a model of `config`, counted from their shapes (no tensor is made). */
export const parameters = Transformer.parametersOf

/** The LoRA adapters' parameters of a model of `config`: r·(in + out) per adapted Linear, every block. */
export const adapterParameters = (config: Transformer.Config, lora: Lora.Config): number => Lora.parametersOf(config, lora)

/** β of a `grpo` stage entry's config as the recipe gives it (decoded already, so well-formed); the default is 0. */
const betaOf = (config: unknown): number => {
  const beta = (config as { update?: { loss?: { beta?: unknown } } } | undefined)?.update?.loss?.beta
  return typeof beta === "number" ? beta : 0
}

/** What a run of `recipe` with a policy of `config` holds in weights (see the module doc); `lora` when the policy trains adapters. */
export const footprint = (recipe: Recipe.Recipe, config: Transformer.Config, lora?: Lora.Config): Backend.Footprint => {
  const p = parameters(config)
  const reference = lora === undefined && recipe.stages.some((s) => s.stage === "grpo" && betaOf(s.config) > 0) ? p : 0
  return { parameters: p, trainable: lora === undefined ? p : adapterParameters(config, lora), reference }
}

// ---------------------------------------------------------------------------------------------------
// The measurement.

/** The peaks of one stage so far. */
export interface Peaks {
  readonly peakRssBytes: number
  readonly peakTensorBytes: number
  /** Where the RSS peak counts from: the stage's start, or the process's where the reset was refused. */
  readonly rssSince: "stage" | "process"
  /** Whether every allocation was seen (the engine hook), or only the moments `sample` was called. */
  readonly tensorPeakOf: "allocations" | "samples"
}

/** Counts one stage's peaks from `start` on; `sample` any number of times, `close` once at the stage's end. */
export interface Meter {
  readonly sample: () => Peaks
  /** Stops counting (the engine hook then skips this meter). */
  readonly close: () => void
}

interface Running {
  tensorPeak: number
  rssPeak: number
}

type Engine = { trackTensor?: (a: unknown, backend: unknown) => void; state: { numBytes: number } }

// The engine is one per process (tfjs keeps it in a global), so its hook and the meters it feeds are too.
const running = new Set<Running>()
let hooked: boolean | undefined

/**
 * Wraps the tfjs engine's `trackTensor` once per process: every tensor the engine makes (`makeTensor`,
 * `makeTensorFromTensorInfo`, variables) passes through it as `this.trackTensor`, so the instance's own
 * property is what they call. False where this tfjs has no such method (the peaks are then sampled only).
 */
const hook = (): boolean => {
  if (hooked !== undefined) return hooked
  const engine = tf.engine() as unknown as Engine
  const track = engine.trackTensor
  hooked = typeof track === "function"
  if (typeof track === "function") {
    engine.trackTensor = function(this: Engine, a, backend) {
      track.call(this, a, backend)
      const bytes = this.state.numBytes
      for (const m of running) if (bytes > m.tensorPeak) m.tensorPeak = bytes
    }
  }
  return hooked
}

/** The kernel's high-water mark of this process's RSS, in bytes; undefined off Linux. */
const hwm = (): number | undefined => {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync("/proc/self/status", "utf8"))
    return m === null ? undefined : Number(m[1]) * 1024
  } catch {
    return undefined
  }
}

/** Resets the high-water mark, first folding it into the meters still running (an outer stage's peak stays); false where refused. */
const resetHwm = (): boolean => {
  const before = hwm()
  if (before === undefined) return false
  for (const m of running) m.rssPeak = Math.max(m.rssPeak, before)
  try {
    writeFileSync("/proc/self/clear_refs", "5")
    return true
  } catch {
    return false
  }
}

/** Starts counting a stage's peaks now. Meters may nest: each keeps its own peaks. */
export const start = (): Meter => {
  const allocations = hook()
  const m: Running = { tensorPeak: tf.memory().numBytes, rssPeak: process.memoryUsage.rss() }
  const since = resetHwm() ? "stage" : "process"
  running.add(m)
  return {
    sample: () => {
      m.tensorPeak = Math.max(m.tensorPeak, tf.memory().numBytes)
      const mark = since === "stage" ? hwm() ?? 0 : process.resourceUsage().maxRSS * 1024
      m.rssPeak = Math.max(m.rssPeak, mark, process.memoryUsage.rss())
      return { peakRssBytes: m.rssPeak, peakTensorBytes: m.tensorPeak, rssSince: since, tensorPeakOf: allocations ? "allocations" : "samples" }
    },
    close: () => {
      running.delete(m)
    }
  }
}

/** A meter for the scope: started now, closed with the scope. */
export const meter: Effect.Effect<Meter, never, Scope.Scope> = Effect.acquireRelease(Effect.sync(start), (m) => Effect.sync(m.close))

/** The peaks as `perf.jsonl` keys (docs/metrics.md). */
export const perfValues = (p: Peaks): Record<string, number> => ({ "perf/peak_rss_bytes": p.peakRssBytes, "perf/peak_tensor_bytes": p.peakTensorBytes })
