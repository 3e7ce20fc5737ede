/**
 * The `reward-model` stage end to end: a grpo stage whose rollouts score mixed on two test rewards, a
 * reward-model stage building pairs from them, and a grpo stage scoring with `{ stage: "rm" }`. The pairs are
 * checked against the saved rollouts (recounted here, not by the stage's code), the later stage's
 * `reward_rm` column against `RewardModel.score` of the checkpoint, and a resume after the stage must not
 * train it again. A pairs file whose chosen and rejected differ by an easy feature must be learnt (> 0.8).
 */
import { Backend } from "@r1flow/backend"
import { Columns, Metrics } from "@r1flow/core"
import { RewardModel } from "@r1flow/reward-model"
import { tableFromIPC, type Float32, type Table, type Vector } from "apache-arrow"
import { Effect } from "effect"
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { readParquet } from "parquet-wasm"
import { beforeAll, describe, expect, it } from "vitest"
import * as Run from "../src/Run.js"
import { run, runFail, tempDir } from "./helpers.js"
import { arithmetic, effectUrl, testRecipe, tokenizer, writeModule, writeRecipe } from "./support/recipes.js"

beforeAll(async () => {
  await Backend.init()
})

const reward = (name: string, body: string) => `import { Schema } from ${JSON.stringify(effectUrl)}
import { existsSync } from "node:fs"
export default { kind: "reward", name: ${JSON.stringify(name)}, version: "1.0.0", description: "test reward", config: Schema.Struct({ flag: Schema.optionalKey(Schema.String) }),
  make: (config) => ({ score: (input) => ${body} }) }`

// Two criteria with mixed outcomes on a random policy's completions: even length, and long enough.
const parity = reward("parity", "Float32Array.from(input.completions, (c) => (c.length % 2 === 0 ? 1 : 0))")
const long = reward("long", "Float32Array.from(input.completions, (c) => (c.length >= 8 ? 1 : 0.5))")
// Fails the stage while its flag file exists: stops the run after the reward-model stage, for the resume.
const gate = reward("gate", "{ if (existsSync(config.flag)) throw new Error('gate closed'); return new Float32Array(input.rows) }")

const parquet = (file: string): Table => tableFromIPC(readParquet(new Uint8Array(readFileSync(file))).intoIPCStream())
const strings = (t: Table, n: string) => Array.from(t.getChild(n)!, (s) => String(s))
const floats = (t: Table, n: string) => Array.from(t.getChild(n) as Vector<Float32>, Number)

const lastValue = (entries: ReadonlyArray<Metrics.Entry>, key: string) => entries.map((e) => e.values[key]).filter((v) => v !== undefined).at(-1)

describe("reward-model stage", () => {
  it("builds pairs from a grpo stage's rollouts, trains, hands the model to a later stage as a reward, and is not retrained on resume", async () => {
    const root = tempDir("rm-stage")
    writeModule(root, "parity.mjs", parity)
    writeModule(root, "long.mjs", long)
    writeModule(root, "gate.mjs", gate)
    const flag = join(root, "gate-closed")
    writeFileSync(flag, "")
    const file = writeRecipe(root, testRecipe({
      name: "rm-stage",
      task: arithmetic(16, 2),
      tokenizer: { ...tokenizer, splitDigits: true },
      checkpoint: { every: 0, keep: 10 },
      stages: [
        {
          stage: "grpo", name: "rl",
          config: {
            steps: 2, promptsPerStep: 4, groupSize: 4, sampling: { maxNewTokens: 6, temperature: 1 },
            rewards: [{ plugin: "./parity.mjs", name: "accuracy" }, { plugin: "./long.mjs", name: "language" }],
            update: { optimizer: { learningRate: 1e-3 } }
          }
        },
        {
          stage: "reward-model", name: "rm",
          config: { source: { kind: "rollouts", stage: "rl", by: [{ reward: "accuracy" }, { reward: "language", threshold: 0.9 }] }, heldOut: 0.25, steps: 6, batchSize: 8, learningRate: 1e-3 }
        },
        {
          stage: "grpo", name: "final",
          config: {
            steps: 1, promptsPerStep: 2, groupSize: 2, sampling: { maxNewTokens: 6, temperature: 0.7 },
            rewards: [{ plugin: "@r1flow/reward-model", name: "rm", config: { stage: "rm" } }, { plugin: "./gate.mjs", name: "gate", weight: 0, config: { flag } }],
            update: { optimizer: { learningRate: 1e-3 } }
          }
        }
      ]
    }))
    const first: Array<string> = []
    const failed = await runFail(Run.run(file, { log: (l) => first.push(l) }))
    expect(String((failed as { message: string }).message)).toMatch(/gate closed/)
    const runDir = join(root, "runs", readdirSync(join(root, "runs"))[0])

    // The pairs, recounted from the saved rollouts of "rl" (steps 1 and 2): per group and criterion, min(|C|, |R|).
    const rollouts = ["step-000001.parquet", "step-000002.parquet"].map((f) => parquet(join(runDir, "rollouts", f)))
    const pairs = tableFromIPC(readFileSync(join(runDir, "reward-models", "rm.pairs.arrow")))
    const [pPrompt, pChosen, pRejected, pBy, pSplit] = ["prompt", "chosen", "rejected", "by", "split"].map((n) => strings(pairs, n))
    for (const [by, threshold] of [["accuracy", 1], ["language", 0.9]] as const) {
      const groups = new Map<string, Array<{ completion: string; score: number }>>(), groupOf = new Map<string, string>()
      for (const [s, t] of rollouts.entries()) {
        const prompt = strings(t, "prompt"), completion = strings(t, "completion"), group = Array.from(t.getChild("group_id")!, Number), score = floats(t, `reward_${by}`)
        for (let i = 0; i < t.numRows; i++) {
          const key = `${s}/${group[i]}`
          groups.set(key, [...(groups.get(key) ?? []), { completion: completion[i], score: score[i] }])
          groupOf.set(prompt[i], key)
        }
      }
      // 8 distinct prompts over the 2 steps (16 train problems, 4 a step): a prompt names its group.
      expect(groupOf.size).toBe(8)
      let expected = 0
      for (const rows of groups.values()) expected += Math.min(rows.filter((r) => r.score >= threshold).length, rows.filter((r) => r.score < threshold).length)
      expect(expected).toBeGreaterThan(0)
      expect(pBy.filter((b) => b === by).length).toBe(expected)
      // Each pair's chosen scores ≥ threshold and its rejected below, both completions of its own prompt's group.
      for (let k = 0; k < pairs.numRows; k++) {
        if (pBy[k] !== by) continue
        const rows = groups.get(groupOf.get(pPrompt[k])!)!
        expect(rows.some((r) => r.completion === pChosen[k] && r.score >= threshold)).toBe(true)
        expect(rows.some((r) => r.completion === pRejected[k] && r.score < threshold)).toBe(true)
      }
    }
    // Split by prompt: none on both sides; a quarter of the distinct prompts held out.
    const trainPrompts = new Set(pPrompt.filter((_, k) => pSplit[k] === "train")), heldPrompts = new Set(pPrompt.filter((_, k) => pSplit[k] === "heldout"))
    expect([...heldPrompts].filter((p) => trainPrompts.has(p))).toEqual([])
    expect(heldPrompts.size).toBe(Math.max(1, Math.round(0.25 * (trainPrompts.size + heldPrompts.size))))

    const checkpoint = join(runDir, "reward-models", "rm")
    expect(existsSync(join(checkpoint, RewardModel.HEAD_FILE))).toBe(true)
    const { entries } = Metrics.readJsonl(join(runDir, "metrics.jsonl"))
    expect(lastValue(entries, "rm/pairs")).toBe(pairs.numRows)
    const heldout = lastValue(entries, "rm/heldout_accuracy")!
    expect(heldout).toBeGreaterThanOrEqual(0)
    expect(heldout).toBeLessThanOrEqual(1)
    expect(entries.filter((e) => e.values["rm/loss"] !== undefined).length).toBe(6)
    expect(first.some((l) => l.startsWith(`[rm] reward model: ${pSplit.filter((x) => x === "train").length} training pairs, held-out accuracy ${(100 * heldout).toFixed(1)} %`))).toBe(true)

    // Resume after the stage: it does not run again, the checkpoint is found where it was written.
    const written = statSync(join(checkpoint, RewardModel.HEAD_FILE)).mtimeMs
    rmSync(flag)
    const lines: Array<string> = []
    await run(Run.resume(runDir, { log: (l) => lines.push(l) }))
    expect(lines.some((l) => l.includes("stage 2/3: rm"))).toBe(false)
    expect(lines.some((l) => l.includes("stage 3/3: final"))).toBe(true)
    expect(statSync(join(checkpoint, RewardModel.HEAD_FILE)).mtimeMs).toBe(written)

    // The later stage's reward_rm column is the checkpoint's score of prompt ⧺ completion.
    const last = readdirSync(join(runDir, "rollouts")).sort().at(-1)!
    const scored = parquet(join(runDir, "rollouts", last))
    const model = await Effect.runPromise(RewardModel.load(checkpoint))
    const p = Columns.int32List(scored.getChild("prompt_ids") as any), c = Columns.int32List(scored.getChild("completion_ids") as any)
    const want = await RewardModel.score(model, Array.from({ length: scored.numRows }, (_, i) => [Columns.row(p, i), Columns.row(c, i)] as const))
    model.dispose()
    const got = floats(scored, "reward_rm")
    expect(got.length).toBe(4)
    expect(new Set(got).size).toBeGreaterThan(1)
    got.forEach((v, i) => expect(v).toBeCloseTo(want[i], 4))
  }, 120_000)

  it("learns an easy preference from a pairs file: held-out accuracy above 0.8", async () => {
    const root = tempDir("rm-file")
    const rows = (from: number, to: number) =>
      Array.from({ length: to - from }, (_, k) => {
        // The feature: a 7 where the rejected completion has a 3, amid digits that vary from pair to pair.
        const [a, b] = [(from + k) % 10, (3 * k + 1) % 10]
        return JSON.stringify({ prompt: `${from + k} + ${k % 7}`, chosen: `<answer>${a}7${b}</answer>`, rejected: `<answer>${a}3${b}</answer>` })
      }).join("\n")
    writeFileSync(join(root, "train.jsonl"), rows(0, 48))
    writeFileSync(join(root, "test.jsonl"), rows(100, 120))
    const file = writeRecipe(root, testRecipe({
      name: "rm-file",
      tokenizer: { ...tokenizer, splitDigits: true },
      stages: [{ stage: "reward-model", name: "rm", config: { source: { kind: "file", train: "train.jsonl", test: "test.jsonl" }, init: "fresh", steps: 30, batchSize: 16, learningRate: 3e-3 } }]
    }))
    const result = await run(Run.run(file, { log: () => {} }))
    const { entries } = Metrics.readJsonl(result.dir.metrics)
    expect(lastValue(entries, "rm/pairs")).toBe(68)
    expect(lastValue(entries, "rm/heldout_accuracy")).toBeGreaterThan(0.8)
    // Learnt, not just nudged: the Bradley–Terry loss fell well below ln 2 (every margin 0, where it starts).
    const losses = entries.map((e) => e.values["rm/loss"]).filter((v) => v !== undefined)
    expect(losses[0]).toBeCloseTo(Math.log(2), 3)
    expect(losses.at(-1)).toBeLessThan(0.3)
  }, 60_000)

  it("refuses up front a rollouts source that is not an earlier grpo stage, and a reward naming no earlier reward-model stage", async () => {
    const root = tempDir("rm-check")
    const rm = (source: unknown) => ({ stage: "reward-model", name: "rm", config: { source, steps: 1, batchSize: 1 } })
    const grpo = (name: string, rewards: unknown) => ({ stage: "grpo", name, config: { steps: 1, promptsPerStep: 1, groupSize: 2, sampling: { maxNewTokens: 2, temperature: 1 }, rewards } })
    const format = [{ plugin: "@r1flow/reward-format", name: "format" }]
    const fails = async (stages: ReadonlyArray<unknown>) => String(((await runFail(Run.run(writeRecipe(root, testRecipe({ stages })), { log: () => {} }))) as { message: string }).message)
    expect(await fails([rm({ kind: "rollouts", stage: "rl", by: [{ reward: "format" }] }), grpo("rl", format)])).toMatch(/stages\[0\]\.config\.source\.stage: "rl" \(stages\[1\]\) does not run before this stage/)
    expect(await fails([grpo("rl", format), rm({ kind: "rollouts", stage: "rl", by: [{ reward: "accuracy" }] })])).toMatch(/source\.by\[0\]\.reward: "accuracy" is not a reward of "rl" \(its rewards: format\)/)
    expect(await fails([grpo("rl", format), rm({ kind: "file", train: "pairs.jsonl" })])).toMatch(/source\.train: .*pairs\.jsonl does not exist/)
    writeFileSync(join(root, "pairs.jsonl"), "")
    expect(await fails([grpo("rl", [{ plugin: "@r1flow/reward-model", config: { stage: "rm" } }]), rm({ kind: "file", train: "pairs.jsonl" })])).toMatch(/stages\[0\]\.config\.rewards\[0\]\.config\.stage names the reward-model stage "rm" \(stages\[1\]\), which does not run before this stage/)
    expect(readdirSync(root).includes("runs")).toBe(false)
  })

  it("a source with no pair, and a reward naming a reward-model stage the recipe lacks, fail naming why", async () => {
    const root = tempDir("rm-fail")
    const grpo = (rewards: unknown) => ({ stage: "grpo", name: "rl", config: { steps: 1, promptsPerStep: 2, groupSize: 2, sampling: { maxNewTokens: 3, temperature: 1 }, rewards } })
    const fails = async (stages: ReadonlyArray<unknown>) => String(((await runFail(Run.run(writeRecipe(root, testRecipe({ stages })), { log: () => {} }))) as { message: string }).message)
    // A random policy never writes R1's format: every completion scores 0, no group has one at 1.
    const rm = { stage: "reward-model", name: "rm", config: { source: { kind: "rollouts", stage: "rl", by: [{ reward: "format" }] }, steps: 1, batchSize: 1 } }
    expect(await fails([grpo([{ plugin: "@r1flow/reward-format", name: "format" }]), rm])).toMatch(/no pair: no group of "rl"'s rollouts had both a completion with format ≥ 1 and one below it/)
    expect(await fails([grpo([{ plugin: "@r1flow/reward-model", config: { stage: "rm" } }])])).toMatch(/rewards\[0\]\.config\.stage names "rm", but no reward-model stage is labelled so/)
  }, 60_000)
})
