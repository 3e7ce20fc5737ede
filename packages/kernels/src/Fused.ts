/**
 * (to be written)
 */
import type * as tf from "@tensorflow/tfjs"
import type { Addon } from "./Native.js"

/** The native kernels of this module, by kernel name, for `Kernels.install`. */
export const kernels = (addon: Addon): ReadonlyArray<readonly [string, tf.KernelFunc]> => {
  void addon
  return []
}
