/**
 * The plugin's config: exactly one of `checkpoint` / `stage`, and `stage` refused by `make` until the
 * engine has rewritten it to a checkpoint (it names no directory on its own).
 */
import { Plugin } from "@r1flow/core"
import { Effect } from "effect"
import { describe, expect, test } from "vitest"
import plugin from "../src/index.js"

const decode = (raw: unknown) => Effect.runPromise(Effect.result(Plugin.decodeConfig(plugin, raw, "rewards[0].config")))
const instantiate = (raw: unknown) => Effect.runPromise(Effect.result(Plugin.instantiate(plugin, raw, "rewards[0].config")))

describe("reward-model plugin config", () => {
  test("checkpoint alone and stage alone decode; neither or both are refused naming the keys", async () => {
    expect((await decode({ checkpoint: "runs/rm" }))._tag).toBe("Success")
    expect((await decode({ stage: "rm" }))._tag).toBe("Success")
    for (const raw of [{}, { checkpoint: "runs/rm", stage: "rm" }]) {
      const r = await decode(raw)
      expect(r._tag === "Failure" && r.failure.message).toMatch(/exactly one of "checkpoint" .* or "stage"/)
    }
  })

  test("an unresolved stage is refused by make, saying the engine resolves it", async () => {
    const r = await instantiate({ stage: "rm" })
    expect(r._tag === "Failure" && r.failure.message).toMatch(/config\.stage "rm" is resolved by the engine/)
    const ok = await instantiate({ checkpoint: "/nowhere" })
    expect(ok._tag).toBe("Success")
  })
})
