import { Backend } from "@r1flow/backend"
import { Rng } from "@r1flow/core"
import { Lora, Transformer } from "@r1flow/model"
import { Effect, Schema } from "effect"
import { beforeAll, describe, expect, it } from "vitest"
import { Metrics, Update } from "../src/index.js"
import { advantages, advantagesBatch, rows, tiny } from "./model.js"

const config = (c: Record<string, unknown>) => Schema.decodeUnknownSync(Update.Config)(c)
const run = <A, E>(e: Effect.Effect<A, E, import("effect").Scope.Scope>) => Effect.runPromise(Effect.scoped(e))
const values = (ws: ReadonlyArray<Transformer.Weight>) => ws.map((w) => Buffer.from((w.variable.dataSync() as Float32Array).buffer))

beforeAll(async () => {
  await Backend.init()
})

describe("GRPO under LoRA", () => {
  it("trains only the adapters, against the base as the reference (KL 0 at the first step)", async () => {
    const policy = Lora.attach(tiny(2), { rank: 2, alpha: 4, targets: ["q", "v", "up", "down"] }, Rng.make(1, "lora"))
    const batch = advantagesBatch(policy, rows, advantages)
    const base = values(policy.weights), adapters = values(policy.lora!.weights)
    const metrics = await run(Effect.gen(function*() {
      const t = yield* Update.make(policy, config({ loss: { beta: 0.04 }, optimizer: { learningRate: 1e-2 } }), Rng.make(1, "mb"))
      expect(t.optimizer.weights.map((w) => w.name)).toEqual(policy.lora!.weights.map((w) => w.name))
      // The reference shares the base's variables: no copy.
      expect(t.reference()!.weights.map((w) => w.variable)).toEqual(policy.weights.map((w) => w.variable))
      expect(t.reference()!.lora).toBeUndefined()
      const first = yield* t.step(batch)
      const second = yield* t.step(advantagesBatch(policy, rows, advantages))
      return [first, second]
    }))
    expect(metrics[0][Metrics.kl]).toBeCloseTo(0, 6)
    expect(metrics[1][Metrics.kl]).toBeGreaterThan(0)
    const after = values(policy.weights), trained = values(policy.lora!.weights)
    expect(after.every((b, i) => b.equals(base[i]))).toBe(true)
    // B moved from 0 (A gets no gradient while B = 0, so at least every B changes).
    const moved = trained.filter((b, i) => !b.equals(adapters[i])).length
    expect(moved).toBeGreaterThanOrEqual(policy.lora!.weights.length / 2)
    policy.dispose()
  })

  it("refuses refSyncSteps under LoRA (the reference cannot move)", async () => {
    const policy = Lora.attach(tiny(2), { rank: 2, alpha: 4, targets: ["q"] }, Rng.make(1, "lora"))
    const r = await run(Effect.result(Update.make(policy, config({ loss: { beta: 0.04 }, refSyncSteps: 5 }), Rng.make(1, "mb"))))
    expect(r._tag).toBe("Failure")
    expect(r._tag === "Failure" ? r.failure.message : "").toMatch(/refSyncSteps must be 0 under LoRA/)
    policy.dispose()
  })
})
