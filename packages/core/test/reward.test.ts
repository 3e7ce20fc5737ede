import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { RecordBatch } from "apache-arrow"
import { Effect, Logger, Schema } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import * as Batch from "../src/Batch.js"
import * as Columns from "../src/Columns.js"
import * as Conformance from "../src/Conformance.js"
import * as Plugin from "../src/Plugin.js"
import * as Reward from "../src/Reward.js"
import * as RewardStage from "../src/RewardStage.js"
import { run, runFail } from "./helpers.js"

const rows: Array<Conformance.Row> = [
  { prompt: "p0", completion: "aa", answer: "1", metadata: { k: 1 }, groupId: 0, id: "r0" },
  { prompt: "p0", completion: "bbbb", answer: "1", metadata: null, groupId: 0, id: "r1" },
  { prompt: "p1", completion: "", answer: null, finishReason: "length", groupId: 1, id: "r2" },
  { prompt: "p1", completion: "héllo 世界", answer: "x", groupId: 1, id: "r3" }
]

/** A reward from a per-row function. */
const perRow = (name: string, f: (input: Reward.Input, i: number) => number): Reward.Reward => ({
  name,
  version: "1.0.0",
  score: (input) => Float32Array.from({ length: input.rows }, (_, i) => f(input, i))
})

const values = (batch: RecordBatch, column: string) => Array.from(Columns.float32Values(batch.getChild(column) as any))

/** Runs `effect`, collecting the messages it logs. */
const withLogs = async <A, E>(effect: Effect.Effect<A, E>): Promise<{ exit: "ok" | "fail"; value: A | E; logs: Array<string> }> => {
  const logs: Array<string> = []
  const logger = Logger.make((o) => {
    logs.push(Array.isArray(o.message) ? o.message.join(" ") : String(o.message))
  })
  const r = await Effect.runPromise(Effect.result(effect).pipe(Effect.provide(Logger.layer([logger]))))
  return r._tag === "Success" ? { exit: "ok", value: r.success, logs } : { exit: "fail", value: r.failure, logs }
}

describe("Reward.inputFromBatch", () => {
  it("decodes text, answers and metadata, and views token ids without copying", () => {
    const batch = Conformance.makeBatch(rows)
    const input = Reward.inputFromBatch(batch)
    expect(input.rows).toBe(4)
    expect(input.completions).toEqual(["aa", "bbbb", "", "héllo 世界"])
    expect(input.answers).toEqual(["1", "1", null, "x"])
    expect(input.metadata).toEqual([{ k: 1 }, {}, {}, {}])
    expect(input.finishReasons).toEqual(["stop", "stop", "length", "stop"])
    expect(Array.from(input.groupIds)).toEqual([0, 0, 1, 1])
    expect(Array.from(Columns.row(input.completionIds, 1))).toEqual([98, 98, 98, 98])
    const col = batch.getChild("completion_ids")!.data[0].children[0].values as Int32Array
    expect(input.completionIds.values.buffer).toBe(col.buffer)
  })

  it("metadata that is not a JSON object reads as {}", () => {
    expect(Reward.parseMetadata("[1,2]")).toEqual({})
    expect(Reward.parseMetadata("{bad")).toEqual({})
    expect(Reward.parseMetadata('{"numbers":[1]}')).toEqual({ numbers: [1] })
  })
})

describe("Reward.define", () => {
  it("builds a reward plugin whose rewards carry its name and version", async () => {
    const plugin = Reward.define({
      name: "const",
      version: "1.2.3",
      description: "a constant",
      config: Schema.Struct({ value: Schema.Number }),
      make: (c) => ({ score: (input) => new Float32Array(input.rows).fill(c.value) })
    })
    expect(plugin.kind).toBe("reward")
    await run(Plugin.validate("const", { default: plugin }, "reward"))
    const reward = await run(Plugin.instantiate(plugin, { value: 0.5 }, "rewards[0].config"))
    expect(reward.name).toBe("const")
    expect(reward.version).toBe("1.2.3")
    expect(await Conformance.score(reward, rows)).toEqual([0.5, 0.5, 0.5, 0.5])
  })
})

describe("RewardStage (in-process)", () => {
  const length = perRow("len", (input, i) => input.completions[i].length)
  const hasAnswer = perRow("has-answer", (input, i) => (input.answers[i] === null ? NaN : 1))

  it("writes one column per reward and the NaN-aware weighted total", async () => {
    const stage = RewardStage.make([{ reward: length, weight: 0.5 }, { reward: hasAnswer, weight: 2 }])
    const out = await run(stage.run(Conformance.makeBatch(rows)))
    expect(stage.names).toEqual(["len", "has-answer"])
    expect(out.schema.fields.map((f) => f.name)).toEqual([...Batch.Rollouts.fields.map((f) => f.name), "reward_len", "reward_has-answer", "reward"])
    expect(values(out, "reward_len")).toEqual([2, 4, 0, 8])
    expect(values(out, "reward_has-answer")).toEqual([1, 1, NaN, 1])
    expect(values(out, "reward")).toEqual([3, 4, 0, 6])
  })

  it("a row's total is NaN only when every weighted reward is NaN; weight 0 is for logging only", async () => {
    const nan = perRow("nan", () => NaN)
    const stage = RewardStage.make([{ reward: hasAnswer }, { reward: nan }, { reward: length, weight: 0, column: "len-log" }])
    const out = await run(stage.run(Conformance.makeBatch(rows)))
    expect(values(out, "reward")).toEqual([1, 1, NaN, 1])
    expect(values(out, "reward_len-log")).toEqual([2, 4, 0, 8])
    expect(values(out, "reward_nan").every(Number.isNaN)).toBe(true)
  })

  it("later rewards see the columns of earlier ones", async () => {
    const doubled = perRow("doubled", (input, i) => 2 * (input.batch.getChild("reward_len")!.get(i) as number))
    const out = await run(RewardStage.make([{ reward: length }, { reward: doubled }]).run(Conformance.makeBatch(rows)))
    expect(values(out, "reward_doubled")).toEqual([4, 8, 0, 16])
  })

  it("refuses two rewards writing the same column", () => {
    expect(() => RewardStage.make([{ reward: length }, { reward: length }])).toThrow(/reward_len/)
  })
})

describe("RewardStage failure policy (in-process)", () => {
  const batch = () => Conformance.makeBatch(rows)
  const throwsOnEmpty = perRow("picky", (input, i) => {
    if (input.completions[i] === "") throw new Error("empty completion")
    return 1
  })

  it("a throw under `fail` stops with an error naming the reward and the row", async () => {
    const err = await runFail(RewardStage.make([{ reward: throwsOnEmpty, onError: "fail" }]).run(batch()))
    expect(err._tag).toBe("StageError")
    expect(err.message).toContain('reward "picky"')
    expect(err.message).toContain("Error: empty completion")
    expect(err.message).toContain('row 2, id "r2"')
  })

  it("a throw under `nan` gives NaN rows, a counter and a warning naming the reward", async () => {
    const stage = RewardStage.make([{ reward: throwsOnEmpty, onError: "nan" }, { reward: perRow("one", () => 1) }])
    const r = await withLogs(stage.run(batch()))
    expect(r.exit).toBe("ok")
    expect(values(r.value as RecordBatch, "reward_picky")).toEqual([NaN, NaN, NaN, NaN])
    expect(values(r.value as RecordBatch, "reward")).toEqual([1, 1, 1, 1])
    expect(stage.failures().picky).toMatchObject({ calls: 1, rows: 4 })
    expect(r.logs.some((l) => l.includes('reward "picky"') && l.includes("empty completion"))).toBe(true)
  })

  it("an async reward that hangs past its timeout is abandoned (and its signal aborted)", async () => {
    let aborted = false
    const hang: Reward.Reward = {
      name: "hang",
      version: "1.0.0",
      score: (input) =>
        new Promise<Float32Array>(() => {
          input.signal.addEventListener("abort", () => (aborted = true))
        })
    }
    const failing = await runFail(RewardStage.make([{ reward: hang, timeoutMs: 50 }]).run(batch()))
    expect(failing.message).toMatch(/reward "hang".*timeout of 50 ms/)
    expect(aborted).toBe(true)
    const stage = RewardStage.make([{ reward: hang, timeoutMs: 50, onError: "nan" }])
    const out = await run(stage.run(batch()))
    expect(values(out, "reward_hang").every(Number.isNaN)).toBe(true)
    expect(stage.failures().hang.calls).toBe(1)
  })

  it("a rejected promise, a wrong length and a non-Float32Array are failures", async () => {
    const rejects: Reward.Reward = { name: "rej", version: "1.0.0", score: () => Promise.reject(new TypeError("nope")) }
    const short: Reward.Reward = { name: "short", version: "1.0.0", score: () => new Float32Array(1) }
    const plain: Reward.Reward = { name: "plain", version: "1.0.0", score: (input) => Array(input.rows).fill(1) as unknown as Float32Array }
    expect((await runFail(RewardStage.make([{ reward: rejects }]).run(batch()))).message).toContain("TypeError: nope")
    expect((await runFail(RewardStage.make([{ reward: short }]).run(batch()))).message).toContain("returned 1 scores for 4 rows")
    expect((await runFail(RewardStage.make([{ reward: plain }]).run(batch()))).message).toContain("returned an Array, not a Float32Array")
    const stage = RewardStage.make([{ reward: short, onError: "nan" }])
    expect(values(await run(stage.run(batch())), "reward_short").every(Number.isNaN)).toBe(true)
  })

  it("Infinity is a failure of that row: `fail` names it, `nan` blanks only it", async () => {
    const inf = perRow("inf", (_, i) => (i === 3 ? Infinity : i))
    const err = await runFail(RewardStage.make([{ reward: inf }]).run(batch()))
    expect(err.message).toContain('returned Infinity for row 3 (id "r3")')
    const stage = RewardStage.make([{ reward: inf, onError: "nan" }])
    expect(values(await run(stage.run(batch())), "reward_inf")).toEqual([0, 1, 2, NaN])
    expect(stage.failures().inf).toMatchObject({ calls: 1, rows: 1 })
  })
})

describe("RewardStage.load (plugins in worker threads)", () => {
  const dir = mkdtempSync(join(tmpdir(), "r1flow-reward-"))
  const effectUrl = import.meta.resolve("effect")
  const plugin = (file: string, name: string, score: string, config = "Schema.Struct({})") => {
    writeFileSync(
      join(dir, file),
      `import { Effect, Schema } from ${JSON.stringify(effectUrl)}
       export default { kind: "reward", name: ${JSON.stringify(name)}, version: "1.0.0", description: "test",
         config: ${config}, make: (config) => ({ score: ${score} }) }`
    )
    return `./${file}`
  }
  const len = plugin(
    "len.mjs",
    "len",
    "(input) => Float32Array.from(input.completions, (c, i) => c.length * config.scale + input.completionIds.offsets[i + 1] * 0 + (input.metadata[i].k ?? 0) * 0 + (input.batch.numRows - input.rows))",
    "Schema.Struct({ scale: Schema.Number.pipe(Schema.withDecodingDefaultKey(Effect.succeed(1))) })"
  )
  const loop = plugin("loop.mjs", "loop", "(input) => { if (input.completions.some((c) => c === '')) { while (true) {} } return new Float32Array(input.rows).fill(1) }")
  const exits = plugin("exit.mjs", "exit", "() => { process.exit(3) }")
  const throws = plugin("throws.mjs", "throws", "(input) => { if (input.completions.includes('')) throw new RangeError('bad row'); return new Float32Array(input.rows) }")
  const inf = plugin("inf.mjs", "inf", "(input) => new Float32Array(input.rows).fill(Infinity)")
  // Grows a JS array of objects until something stops it (on batches with an empty completion).
  const bomb = plugin("bomb.mjs", "bomb", "(input) => { if (input.completions.includes('')) { const hoard = []; for (;;) hoard.push({ at: hoard.length, text: 'x' + hoard.length }) } return new Float32Array(input.rows).fill(1) }")
  const stages: Array<RewardStage.RewardStage> = []
  const load = async (config: RewardStage.Config, options: { readonly memoryMb?: number } = {}) => {
    const s = await run(RewardStage.load(config, { from: dir, ...options }))
    stages.push(s)
    return s
  }
  afterAll(async () => {
    for (const s of stages) await Effect.runPromise(s.close)
  })
  const decode = (raw: unknown) => Schema.decodeUnknownSync(RewardStage.Config)(raw)

  it("decodes the config with documented defaults", () => {
    expect(decode({ rewards: [{ plugin: "x" }] }).rewards[0]).toEqual({ plugin: "x", weight: 1, onError: "fail", timeoutMs: 30000 })
  })

  it("scores in a worker with the plugin's decoded config", async () => {
    const stage = await load(decode({ rewards: [{ plugin: len, config: { scale: 10 } }, { plugin: len, name: "len1" }] }))
    const out = await run(stage.run(Conformance.makeBatch(rows)))
    expect(values(out, "reward_len")).toEqual([20, 40, 0, 80])
    expect(values(out, "reward_len1")).toEqual([2, 4, 0, 8])
  })

  // Scores one `Input` field per configured use, as a hash exact in Float32: any difference in what the
  // worker decodes shows up as a different score.
  writeFileSync(
    join(dir, "field.mjs"),
    `import { Schema } from ${JSON.stringify(effectUrl)}
     const h = (s) => { let x = 7; for (const c of String(s)) x = (x * 31 + c.codePointAt(0)) % 1000003; return x }
     const ids = (v, i) => Array.from(v.values.subarray(v.offsets[i], v.offsets[i + 1])).join(",")
     const read = {
       prompts: (input, i) => h(input.prompts[i]),
       completions: (input, i) => h(input.completions[i]),
       completionPrefix: (input) => h(input.completionPrefix),
       completionIds: (input, i) => h(ids(input.completionIds, i)),
       answers: (input, i) => (input.answers[i] === null ? -1 : h(input.answers[i])),
       metadata: (input, i) => h(JSON.stringify(input.metadata[i])),
       finishReasons: (input, i) => h(input.finishReasons[i]),
       groupIds: (input, i) => input.groupIds[i],
       batch: (input, i) => h(input.batch.getChild("id").get(i)) + input.batch.getChild("reward_prompts").get(i) + input.rows
     }
     export default { kind: "reward", name: "field", version: "1.0.0", description: "test", config: Schema.Struct({ field: Schema.String }),
       make: ({ field }) => ({ score: (input) => Float32Array.from({ length: input.rows }, (_, i) => read[field](input, i)) }) }`
  )
  const fields = ["prompts", "completions", "completionPrefix", "completionIds", "answers", "metadata", "finishReasons", "groupIds", "batch"]

  it("a worker scores a batch exactly as the same plugin does in this thread (every Input field, earlier columns)", async () => {
    const config = decode({ rewards: fields.map((field, i) => ({ plugin: "./field.mjs", name: field, config: { field }, weight: i + 1 })) })
    const worker = await load(config)
    const inProcess = await run(RewardStage.load(config, { from: dir, isolation: "in-process" }))
    const batch = Conformance.makeBatch(rows, { completionPrefix: "<think>" })
    const [a, b] = [await run(worker.run(batch)), await run(inProcess.run(batch))]
    for (const column of [...fields.map((f) => `reward_${f}`), "reward"]) {
      expect(values(a, column), column).toEqual(values(b, column))
      expect(values(b, column).every(Number.isFinite), column).toBe(true)
    }
    // Each field is read per row, not one constant (the prefix is one value for the whole batch).
    for (const f of fields.filter((f) => f !== "completionPrefix")) expect(new Set(values(b, `reward_${f}`)).size, f).toBeGreaterThan(1)
  })

  it("a sync reward that loops forever is cut at its timeout; the worker restarts for the next batch", async () => {
    const stage = await load(decode({ rewards: [{ plugin: loop, timeoutMs: 300, onError: "nan" }] }))
    const started = performance.now()
    const out = await run(stage.run(Conformance.makeBatch(rows)))
    expect(performance.now() - started).toBeLessThan(10_000)
    expect(values(out, "reward_loop").every(Number.isNaN)).toBe(true)
    expect(stage.failures().loop.last).toMatch(/timeout of 300 ms/)
    const next = await run(stage.run(Conformance.makeBatch(rows.filter((r) => r.completion !== ""))))
    expect(values(next, "reward_loop")).toEqual([1, 1, 1])
    const failing = await load(decode({ rewards: [{ plugin: loop, timeoutMs: 300 }] }))
    expect((await runFail(failing.run(Conformance.makeBatch(rows)))).message).toMatch(/reward "loop".*timeout of 300 ms/)
  })

  it("throws, process.exit and Infinity inside a worker are failures too", async () => {
    const t = await load(decode({ rewards: [{ plugin: throws }] }))
    const err = await runFail(t.run(Conformance.makeBatch(rows)))
    expect(err.message).toContain("RangeError: bad row")
    expect(err.message).toContain('row 2, id "r2"')
    const e = await load(decode({ rewards: [{ plugin: exits, onError: "nan" }] }))
    expect(values(await run(e.run(Conformance.makeBatch(rows))), "reward_exit").every(Number.isNaN)).toBe(true)
    expect(e.failures().exit.last).toMatch(/exited with code 3/)
    const i = await load(decode({ rewards: [{ plugin: inf }] }))
    expect((await runFail(i.run(Conformance.makeBatch(rows)))).message).toContain("returned Infinity for row 0")
  })

  it("a reward that allocates without bound is stopped at its worker's memory limit, handled like a throw, and its worker replaced", async () => {
    const stage = await load(decode({ rewards: [{ plugin: bomb, onError: "nan", timeoutMs: 10_000 }] }), { memoryMb: 64 })
    const out = await run(stage.run(Conformance.makeBatch(rows)))
    expect(values(out, "reward_bomb").every(Number.isNaN)).toBe(true)
    expect(stage.failures().bomb).toMatchObject({ calls: 1, rows: 4 })
    // V8's heap limit or the parent's watch on the whole worker, whichever meets it first.
    expect(stage.failures().bomb.last).toMatch(/ran out of memory \(its worker's (heap )?limit is 64 MB/)
    // The next batch gets a fresh worker.
    const next = await run(stage.run(Conformance.makeBatch(rows.filter((r) => r.completion !== ""))))
    expect(values(next, "reward_bomb")).toEqual([1, 1, 1])
    const failing = await load(decode({ rewards: [{ plugin: bomb, timeoutMs: 10_000 }] }), { memoryMb: 64 })
    const err = await runFail(failing.run(Conformance.makeBatch(rows)))
    expect(err.message).toMatch(/reward "bomb".*ran out of memory/)
    // This process (the trainer's) is still here and still scores.
    expect(values(await run(failing.run(Conformance.makeBatch(rows.slice(0, 2)))), "reward_bomb")).toEqual([1, 1])
  }, 60_000)

  it("check: entries, plugins and the plugins' own configs are checked without starting a worker", async () => {
    const check = (rewards: ReadonlyArray<unknown>) => RewardStage.check({ rewards }, { from: dir, prefix: "stages[2].config" })
    expect((await run(check([{ plugin: len, config: { scale: 2 } }]))).rewards[0]).toEqual({ plugin: len, config: { scale: 2 }, weight: 1, onError: "fail", timeoutMs: 30000 })
    const typo = await runFail(check([{ plugin: len, wieght: 2 }]))
    expect((typo as any).problems).toEqual(['stages[2].config.rewards[0].wieght: unknown key (did you mean "weight"?)'])
    const missing = await runFail(check([{ plugin: len }, { plugin: "./no-such-reward.mjs" }]))
    expect(missing._tag).toBe("PluginError")
    expect(missing.message).toMatch(/^stages\[2\]\.config\.rewards\[1\]\.plugin: cannot find it/)
    const badValue = await runFail(check([{ plugin: len, config: { scale: "big" } }]))
    expect((badValue as any).problems).toEqual(['stages[2].config.rewards[0].config.scale: expected number, got "big"'])
    const pluginTypo = await runFail(check([{ plugin: len, config: { scael: 2 } }]))
    expect((pluginTypo as any).problems).toEqual(['stages[2].config.rewards[0].config.scael: unknown key (did you mean "scale"?)'])
    const dup = await runFail(check([{ plugin: len }, { plugin: len }]))
    expect((dup as any).problems[0]).toMatch(/^stages\[2\]\.config\.rewards\[1\]\.name: the column "reward_len" is already written by rewards\[0\]/)
  })

  it("bad plugins and configs fail at load, naming what and where", async () => {
    const missing = await runFail(RewardStage.load(decode({ rewards: [{ plugin: "./nope.mjs" }] }), { from: dir }))
    expect(missing._tag).toBe("PluginError")
    const badConfig = await runFail(RewardStage.load(decode({ rewards: [{ plugin: len, config: { scale: "big" } }] }), { from: dir }))
    expect((badConfig as any).problems).toEqual(['rewards[0].config.scale: expected number, got "big"'])
    const dup = await runFail(RewardStage.load(decode({ rewards: [{ plugin: len }, { plugin: len }] }), { from: dir }))
    expect((dup as any).problems[0]).toMatch(/rewards\[1\]\.name: the column "reward_len" is already written by rewards\[0\]/)
  })
})

describe("Conformance", () => {
  it("passes a well-behaved reward", async () => {
    const good = perRow("good", (input, i) => (input.answers[i] === null ? NaN : Math.min(1, input.completions[i].length / 100)))
    for (const r of await Conformance.run(good)) expect(r.ok, `${r.check}: ${r.detail}`).toBe(true)
  })

  it("fails a reward that breaks each rule", async () => {
    const failed = async (reward: Reward.Reward) => (await Conformance.run(reward)).filter((r) => !r.ok).map((r) => r.check)
    expect(await failed({ name: "short", version: "1.0.0", score: () => new Float32Array(1) })).toContain("aligned length")
    expect(await failed(perRow("inf", () => Infinity))).toContain("finite or NaN")
    let calls = 0
    expect(await failed(perRow("random", () => calls++))).toContain("deterministic")
    expect(await failed(perRow("empty", (input, i) => (input.completions[i] === "" ? (null as any).x : 0)))).toContain("empty completions")
    expect(await failed(perRow("huge", (input, i) => (input.completions[i].length > 100_000 ? Infinity : 0)))).toContain("huge completions")
    const mutates: Reward.Reward = { name: "m", version: "1.0.0", score: (input) => ((input.completions as Array<string>).push("x"), new Float32Array(input.rows)) }
    expect(await failed(mutates)).toContain("does not mutate its input")
  })

  it("checks a plugin's descriptor and config", async () => {
    const plugin = Reward.define({ name: "Bad Name", version: "1", description: "", config: Schema.Struct({}), make: () => ({ score: (i) => new Float32Array(i.rows) }) })
    const [first] = await Conformance.run(plugin)
    expect(first.check).toBe("descriptor")
    expect(first.ok).toBe(false)
  })
})
