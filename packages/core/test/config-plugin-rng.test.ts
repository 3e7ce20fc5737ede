import { mkdtempSync, readFileSync, writeFileSync, appendFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect, Schema } from "effect"
import { describe, expect, it } from "vitest"
import * as Config from "../src/Config.js"
import * as Metrics from "../src/Metrics.js"
import * as Plugin from "../src/Plugin.js"
import * as Rng from "../src/Rng.js"
import { run, runFail } from "./helpers.js"

const Experiment = Schema.Struct({
  seed: Schema.Int,
  rollout: Schema.Struct({ temperature: Schema.Number, groupSize: Schema.Int }),
  rewards: Schema.Array(Schema.Struct({ plugin: Schema.String, weight: Schema.Number }))
})

describe("config", () => {
  const good = { seed: 1, rollout: { temperature: 1, groupSize: 8 }, rewards: [{ plugin: "x", weight: 1 }] }

  it("decodes a good config", async () => {
    expect(await run(Config.decode(Experiment, good, { source: "test" }))).toEqual(good)
  })

  it("a wrong type names the path, the expectation and what was found", async () => {
    const err = await runFail(Config.decode(Experiment, { ...good, rollout: { temperature: "hot", groupSize: 8 } }, { source: "exp.json" }))
    expect(err._tag).toBe("ConfigError")
    expect(err.problems).toEqual(['rollout.temperature: expected number, got "hot"'])
    expect(err.message).toContain("exp.json")
  })

  it("an unknown key is an error with its path, and all problems are reported", async () => {
    const err = await runFail(
      Config.decode(Experiment, { ...good, rollout: { temperature: 1, groupSize: 8, temprature: 2 }, rewards: [{ plugin: "x", weight: "1" }] }, { source: "t" })
    )
    expect(err.problems).toContain('rollout.temprature: unknown key (did you mean "temperature"?)')
    expect(err.problems).toContain('rewards[0].weight: expected number, got "1"')
  })

  it("an unknown key names the nearest accepted key when one is close, and none when none is", async () => {
    const err = await runFail(Config.decode(Experiment, { ...good, rollout: { temperature: 1, group_size: 8, groupSize: 8, colour: "red" }, rewards: [{ plugin: "x", wieght: 1, weight: 1 }] }, { source: "t" }))
    expect([...err.problems].sort()).toEqual([
      'rewards[0].wieght: unknown key (did you mean "weight"?)',
      "rollout.colour: unknown key",
      'rollout.group_size: unknown key (did you mean "groupSize"?)'
    ])
    expect(Config.nearest("epsilon_high", ["epsilon", "epsilonHigh", "beta"])).toBe("epsilonHigh")
    expect(Config.nearest("maxNewTokns", ["maxNewTokens", "temperature"])).toBe("maxNewTokens")
    expect(Config.nearest("rollout", ["runsDir", "model", "stages"])).toBeUndefined()
  })

  it("a missing key and a bad JSON file are clear errors", async () => {
    const missing = await runFail(Config.decode(Experiment, { seed: 1, rewards: [] }, { source: "t" }))
    expect(missing.problems).toEqual(["rollout: missing (required)"])
    const dir = mkdtempSync(join(tmpdir(), "r1flow-config-"))
    writeFileSync(join(dir, "bad.json"), '{ "seed": 1,, }')
    const bad = await runFail(Config.load(Experiment, join(dir, "bad.json")))
    expect(bad.source).toBe(join(dir, "bad.json"))
    expect(bad.problems[0]).toMatch(/not valid JSON/)
  })

  it("--set overrides parse JSON values and keep strings", async () => {
    const out = (await run(Config.applyOverrides(good, ["rollout.temperature=0.7", "name=my run"]))) as any
    expect(out.rollout.temperature).toBe(0.7)
    expect(out.name).toBe("my run")
    expect(good.rollout.temperature).toBe(1)
    const err = await runFail(Config.applyOverrides(good, ["novalue"]))
    expect(err.problems[0]).toMatch(/not key=value/)
  })
})

describe("plugins", () => {
  const dir = mkdtempSync(join(tmpdir(), "r1flow-plugin-"))
  const write = (name: string, body: string) => {
    writeFileSync(join(dir, name), body)
    return join(dir, name)
  }
  const effectUrl = import.meta.resolve("effect")

  it("loads a valid plugin by path and instantiates it with a decoded config", async () => {
    const p = write(
      "good.mjs",
      `import { Schema } from ${JSON.stringify(effectUrl)}
       export default { kind: "reward", name: "const", version: "1.0.0", description: "constant",
         config: Schema.Struct({ value: Schema.Number }), make: (c) => ({ value: c.value }) }`
    )
    const plugin = await run(Plugin.load(p, { kind: "reward" }))
    expect(plugin.name).toBe("const")
    expect(await run(Plugin.instantiate(plugin, { value: 3 }, "rewards[0].config"))).toEqual({ value: 3 })
    const bad = await runFail(Plugin.instantiate(plugin, { value: "x" }, "rewards[0].config"))
    expect((bad as Config.ConfigError).problems).toEqual(['rewards[0].config.value: expected number, got "x"'])
  })

  it("a missing package, a module without default export, and a bad descriptor are clear errors", async () => {
    const missing = await runFail(Plugin.load("@r1flow/no-such-plugin"))
    expect(missing.plugin).toBe("@r1flow/no-such-plugin")
    expect(missing.message).toMatch(/cannot find it/)
    const noDefault = await runFail(Plugin.load(write("nodefault.mjs", "export const x = 1")))
    expect(noDefault.message).toMatch(/no default export/)
    const bad = await runFail(Plugin.load(write("bad.mjs", `export default { kind: "reward", name: "Bad Name", version: "one", description: "", config: {}, make: 1 }`)))
    expect(bad.message).toMatch(/not a valid plugin/)
    expect(bad.message).toMatch(/name/)
    expect(bad.message).toMatch(/version/)
    expect(bad.message).toMatch(/config: expected an Effect Schema/)
    expect(bad.message).toMatch(/make: expected a function/)
    const throws = await runFail(Plugin.load(write("throws.mjs", "throw new Error('boom at import')")))
    expect(throws.message).toMatch(/importing it failed: boom at import/)
  })

  it("a plugin of the wrong kind is refused", async () => {
    const p = write(
      "stage.mjs",
      `import { Schema } from ${JSON.stringify(effectUrl)}
       export default { kind: "stage", name: "s", version: "0.1.0", description: "", config: Schema.Struct({}), make: () => ({}) }`
    )
    const err = await runFail(Plugin.load(p, { kind: "reward" }))
    expect(err.message).toBe("is a stage plugin, but a reward plugin is needed here")
  })
})

describe("rng", () => {
  it("same seed and name give the same draws; names are independent", () => {
    const a = Rng.make(42, "rollout")
    const b = Rng.make(42, "rollout")
    const c = Rng.make(42, "data")
    const xs = Array.from({ length: 5 }, () => a.nextU32())
    expect(Array.from({ length: 5 }, () => b.nextU32())).toEqual(xs)
    expect(Array.from({ length: 5 }, () => c.nextU32())).not.toEqual(xs)
    expect(Rng.make(43, "rollout").nextU32()).not.toBe(xs[0])
  })

  it("save/restore reproduces the same draws exactly", () => {
    const r = Rng.make(7, "x")
    for (let i = 0; i < 100; i++) r.nextFloat()
    const saved = r.state()
    const first = Array.from({ length: 20 }, () => [r.nextFloat(), r.normal(), r.nextInt(10)])
    r.restore(saved)
    expect(Array.from({ length: 20 }, () => [r.nextFloat(), r.normal(), r.nextInt(10)])).toEqual(first)
  })

  it("the service snapshots every stream and restores them; a snapshot from another seed is refused", async () => {
    const svc = Rng.makeService(5)
    svc.stream("a").nextU32()
    svc.stream("b").nextFloat()
    const snap = svc.snapshot()
    const expected = [svc.stream("a").nextU32(), svc.stream("b").nextU32()]
    const fresh = Rng.makeService(5)
    await run(fresh.restore(JSON.parse(JSON.stringify(snap))))
    expect([fresh.stream("a").nextU32(), fresh.stream("b").nextU32()]).toEqual(expected)
    const err = await runFail(Rng.makeService(6).restore(snap))
    expect(err.message).toMatch(/seed 5/)
  })

  it("floats are uniform enough and in [0, 1)", () => {
    const r = Rng.make(1, "u")
    let sum = 0
    for (let i = 0; i < 20000; i++) {
      const x = r.nextFloat()
      expect(x >= 0 && x < 1).toBe(true)
      sum += x
    }
    expect(Math.abs(sum / 20000 - 0.5)).toBeLessThan(0.01)
  })
})

describe("metrics", () => {
  it("records per step and appends whole JSONL records; a torn tail is truncated on reopen", async () => {
    const dir = mkdtempSync(join(tmpdir(), "r1flow-metrics-"))
    const path = join(dir, "metrics.jsonl")
    const m = Metrics.make([Metrics.jsonlSink(path)])
    await run(m.record(1, { loss: 0.5 }))
    await run(m.record(2, { loss: 0.25, reward: 1 }))
    expect(m.history().length).toBe(2)
    appendFileSync(path, '{"step":3,"lo')
    const { entries } = Metrics.readJsonl(path)
    expect(entries.map((e) => e.step)).toEqual([1, 2])
    const sink = Metrics.jsonlSink(path)
    sink.write({ step: 3, values: { loss: 0.1 } })
    sink.close()
    expect(readFileSync(path, "utf8").trim().split("\n").map((l) => JSON.parse(l).step)).toEqual([1, 2, 3])
  })

  it("the console sink prints the chosen keys", async () => {
    const lines: Array<string> = []
    const m = Metrics.make([Metrics.consoleSink(["reward"], (l) => lines.push(l))])
    await run(Effect.asVoid(m.record(4, { reward: 0.5, loss: 1 })))
    expect(lines).toEqual(["step 4  reward=0.5000"])
  })
})
