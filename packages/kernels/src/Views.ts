/**
 * Zero-copy `Identity` and same-dtype `Cast` for the wasm backend: the output shares the input's buffer
 * (reference-counted, as the stock `Reshape` does), since tfjs tensors are never written after they are made.
 * The stock kernels copy: tfjs's engine clones every tensor a gradient saves through `Identity`, so one
 * training step of the demo policy made ~250 full copies of activations.
 */
import type * as tf from "@tensorflow/tfjs"

interface RefCounting {
  incRef(dataId: unknown): void
}

/** `Identity` (non-string) as a shared buffer. */
export const identity = (previous: tf.KernelFunc): tf.KernelFunc => (args) => {
  const { x } = args.inputs as { x: tf.TensorInfo }
  if (x.dtype === "string") return previous(args)
  ;(args.backend as unknown as RefCounting).incRef(x.dataId)
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype }
}

/** `Cast` to the dtype the tensor already has, as a shared buffer; real conversions go to `previous`. */
export const cast = (previous: tf.KernelFunc): tf.KernelFunc => (args) => {
  const { x } = args.inputs as { x: tf.TensorInfo }
  const { dtype } = args.attrs as unknown as { dtype: tf.DataType }
  if (x.dtype !== dtype || x.dtype === "string") return previous(args)
  ;(args.backend as unknown as RefCounting).incRef(x.dataId)
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype }
}
