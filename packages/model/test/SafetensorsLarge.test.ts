import { Effect } from "effect"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { Safetensors } from "../src/index.js"

/** Positioned reads go in 64 MiB chunks: tensors just past one chunk check the seams (F32 in place, BF16 widened). */
describe("Safetensors over chunk boundaries", () => {
  it("writes and reads back tensors larger than one 64 MiB read, exactly", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "r1flow-large-"))
    const file = path.join(dir, "big.safetensors")
    const chunk = 64 * 1024 * 1024
    const f32 = new Float32Array(chunk / 4 + 5), bf = new Uint16Array(chunk / 2 + 3)
    for (let i = 0; i < f32.length; i++) f32[i] = i * 0.5 - 7
    for (let i = 0; i < bf.length; i++) bf[i] = (0x3f80 + (i % 251)) | (i % 3 === 0 ? 0x8000 : 0)
    await Effect.runPromise(Safetensors.writeFile(file, [
      { name: "small", dtype: "F16", shape: [3], bytes: () => new Uint8Array(new Uint16Array([0x3c00, 0xc000, 0x3800]).buffer) },
      { name: "f32", dtype: "F32", shape: [f32.length], bytes: () => new Uint8Array(f32.buffer) },
      { name: "bf16", dtype: "BF16", shape: [bf.length], bytes: () => new Uint8Array(bf.buffer) }
    ], { format: "pt" }))
    const [a, b, c] = await Effect.runPromise(Safetensors.withReader(file, (r) => Effect.all([r.floats("small"), r.floats("f32"), r.floats("bf16")])))
    expect(Array.from(a)).toEqual([1, -2, 0.5])
    expect(Buffer.from(b.buffer).equals(Buffer.from(f32.buffer))).toBe(true)
    const want = new Uint32Array(bf.length)
    for (let i = 0; i < bf.length; i++) want[i] = bf[i] << 16
    expect(Buffer.from(c.buffer).equals(Buffer.from(want.buffer))).toBe(true)
    await fs.rm(dir, { recursive: true })
  })
})
