import { projectConfig } from "../../vitest.shared.mjs"

const config = projectConfig("@r1flow/reward-language-consistency")
// A reward worker imports the built dist/ (it cannot load TypeScript): build it before the tests.
config.test.globalSetup = ["./test/build.ts"]

export default config
