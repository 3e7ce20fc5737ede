import { projectConfig } from "../../vitest.shared.mjs"

const config = projectConfig("@r1flow/core")
// A reward's worker thread runs core's built dist/RewardWorker.js (it cannot load TypeScript): build it
// before the tests, so they never run an older worker than the sources beside them.
config.test.globalSetup = ["./test/build-worker.ts"]

export default config
