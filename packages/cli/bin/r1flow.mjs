#!/usr/bin/env node
// The installed entry point: the CLI is compiled to dist/ (`nx run @r1flow/cli:build`).
import("../dist/main.js").catch((e) => {
  if (e && e.code === "ERR_MODULE_NOT_FOUND" && String(e.message).includes("dist/main.js")) {
    console.error("r1flow: the CLI is not built yet; run `npx nx run @r1flow/cli:build` (npm run demo does this)")
    process.exit(1)
  }
  throw e
})
