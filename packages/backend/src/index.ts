/** @r1flow/backend: picks the fastest TensorFlow.js backend that loads and records why. */
export * as Backend from "./Backend.js"
export * as Read from "./Read.js"
export * as WasmKernels from "./WasmKernels.js"
export * as WebGpu from "./WebGpu.js"
export * as WebGpuKernels from "./WebGpuKernels.js"
