import { defineConfig } from "vitest/config"

/**
 * The one vitest setup every project shares: sources resolve through the `@r1flow/source` export
 * condition (no build needed to test), and a JSON report lands where `tools/scripts/test-summary.mjs` reads it.
 */
export const projectConfig = (name, extra = {}) =>
  defineConfig({
    resolve: { conditions: ["@r1flow/source"] },
    ssr: { resolve: { conditions: ["@r1flow/source"] } },
    test: {
      name,
      include: ["src/**/*.test.ts", "test/**/*.test.ts"],
      environment: "node",
      passWithNoTests: true,
      pool: "forks",
      testTimeout: extra.testTimeout ?? 30_000,
      reporters: ["default", ["json", { outputFile: "test-output/vitest/report.json" }]]
    }
  })
