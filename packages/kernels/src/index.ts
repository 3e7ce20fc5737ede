/** @r1flow/kernels: native CPU kernels for the tfjs wasm backend (zero-copy on its heap, BLAS or own GEMM). */
export * as Elementwise from "./Elementwise.js"
export * as Kernels from "./Kernels.js"
export * as MatMul from "./MatMul.js"
export * as Native from "./Native.js"
export * as Views from "./Views.js"
export * as Attention from "./Attention.js"
export * as Fused from "./Fused.js"
export * as AdamW from "./AdamW.js"
