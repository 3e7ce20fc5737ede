import { defineConfig, mergeConfig } from "vitest/config"
import { projectConfig } from "../../vitest.shared.mjs"

// The native tests run twice, as CI must: on OpenBLAS (when the machine has it) and on the addon's own GEMM.
// The addon reads R1FLOW_NO_BLAS when it loads, in each test process.
export default mergeConfig(projectConfig("@r1flow/kernels"), defineConfig({
  test: {
    projects: [
      { extends: true, test: { name: "@r1flow/kernels (BLAS when present)" } },
      { extends: true, test: { name: "@r1flow/kernels (R1FLOW_NO_BLAS=1)", env: { R1FLOW_NO_BLAS: "1" } } }
    ]
  }
}))
