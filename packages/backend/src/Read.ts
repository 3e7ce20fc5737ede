/**
 * Reading tensors back to the host. On WebGPU a GPU tensor has only the asynchronous read (`data()`;
 * `dataSync` throws), so the model and trainers read through these. On wasm and cpu `data()` gives the values
 * a synchronous read gives, so a run is bit for bit the same either way.
 */
import type * as tf from "@tensorflow/tfjs"
import { Effect } from "effect"

/** `t`'s values (float32), read with `data()`; `t` is disposed after the read, whether or not it succeeded. */
export const floats = async (t: tf.Tensor): Promise<Float32Array> => {
  try {
    return (await t.data()) as Float32Array
  } finally {
    t.dispose()
  }
}

/** `floats` as an Effect. A failed read (a device error) is a defect, as a failed synchronous read was. */
export const floatsEffect = (t: tf.Tensor): Effect.Effect<Float32Array> => Effect.promise(() => floats(t))
