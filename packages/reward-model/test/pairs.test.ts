import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect } from "effect"
import { expect, test } from "vitest"
import { Pairs } from "../src/index.js"

test("a pairs line that is not UTF-8 names the file and line instead of training on U+FFFD", async () => {
  const file = join(mkdtempSync(join(tmpdir(), "r1flow-pairs-")), "latin1.jsonl")
  const good = '{"prompt": "a", "chosen": "b", "rejected": "c"}\n'
  writeFileSync(file, Buffer.concat([Buffer.from(good), Buffer.from('{"prompt": "caf'), Buffer.from([0xe9]), Buffer.from('", "chosen": "b", "rejected": "c"}\n')]))
  const r = await Effect.runPromise(Effect.result(Pairs.read(file)))
  expect(r._tag === "Failure" && r.failure.message).toMatch(/latin1\.jsonl:2: byte 16: invalid UTF-8/)
})
