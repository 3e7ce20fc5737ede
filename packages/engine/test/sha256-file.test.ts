import { createHash } from "node:crypto"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import * as RunDir from "../src/RunDir.js"

describe("RunDir.sha256File", () => {
  it("hashes a file across its 64 MiB read pieces as one read would (checkpoint files pass Node's 2 GiB read limit)", () => {
    const dir = mkdtempSync(join(tmpdir(), "r1flow-sha-"))
    try {
      const bytes = Buffer.alloc(64 * 2 ** 20 + 3)
      for (let i = 0; i < bytes.length; i += 4093) bytes[i] = i % 251
      const file = join(dir, "x.bin")
      writeFileSync(file, bytes)
      expect(RunDir.sha256File(file)).toBe(createHash("sha256").update(bytes).digest("hex"))
      writeFileSync(file, "")
      expect(RunDir.sha256File(file)).toBe(createHash("sha256").digest("hex"))
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
