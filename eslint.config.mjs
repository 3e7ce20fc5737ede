import nx from "@nx/eslint-plugin"

/** Workspace lint rules; each project's eslint.config.mjs extends this. */
export default [
  ...nx.configs["flat/base"],
  ...nx.configs["flat/typescript"],
  { ignores: ["**/dist", "**/out-tsc", "**/test-output", "**/vite.config.*.timestamp*", "**/vitest.config.*.timestamp*", "runs/**"] },
  {
    files: ["**/*.ts", "**/*.mts", "**/*.js", "**/*.mjs"],
    rules: {
      "@nx/enforce-module-boundaries": [
        "error",
        {
          enforceBuildableLibDependency: true,
          allow: [],
          depConstraints: [
            // The core is the contract everything builds on: it may import nothing internal.
            { sourceTag: "scope:core", onlyDependOnLibsWithTags: [] },
            // Plugins are swappable parts: core only, never each other.
            { sourceTag: "scope:plugin", onlyDependOnLibsWithTags: ["scope:core"] },
            { sourceTag: "scope:engine", onlyDependOnLibsWithTags: ["scope:core", "scope:engine", "scope:datasets"] },
            { sourceTag: "scope:datasets", onlyDependOnLibsWithTags: ["scope:core"] },
            { sourceTag: "scope:app", onlyDependOnLibsWithTags: ["scope:core", "scope:engine", "scope:plugin", "scope:datasets"] },
            { sourceTag: "scope:tools", onlyDependOnLibsWithTags: ["scope:core", "scope:engine", "scope:plugin", "scope:datasets", "scope:app"] }
          ]
        }
      ]
    }
  },
  {
    files: ["**/*.ts", "**/*.mts"],
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/no-explicit-any": "off",
      // Arrow's getChild and typed-array indexing return optionals where the schema guarantees a value.
      "@typescript-eslint/no-non-null-assertion": "off",
      "@typescript-eslint/no-empty-function": "off"
    }
  },
  {
    // Tool configs reach the workspace root's shared config by relative path; they are not library code.
    files: ["**/vitest.config.mjs", "**/eslint.config.mjs"],
    rules: { "@nx/enforce-module-boundaries": "off" }
  }
]
