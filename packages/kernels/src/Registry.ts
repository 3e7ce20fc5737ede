/** Whether a kernel serves the active tfjs backend: the one check behind every fused op's choice between its kernel and its composite. */
import * as tf from "@tensorflow/tfjs"

/** True when `kernelName` is registered for the current backend. */
export const has = (kernelName: string): boolean => tf.getKernel(kernelName, tf.getBackend()) !== undefined
