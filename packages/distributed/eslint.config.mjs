import baseConfig from "../../eslint.config.mjs"

export default [
  ...baseConfig,
  // The shared root configs are files of no project; the boundary rule reports them as external resources.
  { files: ["eslint.config.mjs", "vitest.config.mjs"], rules: { "@nx/enforce-module-boundaries": "off" } }
]
