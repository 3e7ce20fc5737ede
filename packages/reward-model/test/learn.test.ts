/**
 * A reward model learns a synthetic preference: the prompt is `BOS a b =` (digits) and the completion is
 * one digit; the chosen completion repeats `a` (the correct answer), the rejected one is any other digit.
 * Trained on 80 % of the (a, b, wrong) triples, it must rank ≥ 90 % of the held-out pairs correctly.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Backend } from "@r1flow/backend"
import { Batch, Columns, Conformance, Plugin, Reward, Rng } from "@r1flow/core"
import type { Transformer } from "@r1flow/model"
import { Effect } from "effect"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import plugin, { Pairs, RewardModel, Train } from "../src/index.js"

const BOS = 10, EQ = 11
const config: Transformer.Config = {
  vocabSize: 12, dModel: 32, nLayers: 2, nHeads: 4, nKvHeads: 2, dFf: 64, maxSeqLen: 8,
  ropeTheta: 10000, normEps: 1e-5, tieEmbeddings: false
}
// Text form "a b|x": prompt "a b", completion "x"; the tokenizer maps digits to ids and adds BOS/EQ.
const encodePrompt = (text: string) => [BOS, ...text.split(" ").map(Number), EQ]
const encode = (text: string) => (text.includes(" ") ? encodePrompt(text) : text.split("").map(Number))

const dir = mkdtempSync(join(tmpdir(), "r1flow-rm-"))
let backend = ""

beforeAll(async () => {
  backend = (await Backend.init()).name
})
afterAll(() => rmSync(dir, { recursive: true, force: true }))

describe("reward model", () => {
  test("Bradley–Terry training reaches ≥ 90 % held-out pair accuracy, and the checkpoint scores as a reward plugin", async () => {
    const rng = Rng.make(7, "reward-model-test")
    const triples: Array<[number, number, number]> = []
    for (let a = 0; a < 10; a++) for (let b = 0; b < 10; b++) for (let x = 0; x < 10; x++) if (x !== a) triples.push([a, b, x])
    rng.shuffle(triples)
    const cut = Math.floor(triples.length * 0.8)
    const rows = (ts: Array<[number, number, number]>) => ts.map(([a, b, x]) => JSON.stringify({ prompt: `${a} ${b}`, chosen: `${a}`, rejected: `${x}` })).join("\n")
    writeFileSync(join(dir, "train.jsonl"), rows(triples.slice(0, cut)))
    writeFileSync(join(dir, "heldout.jsonl"), rows(triples.slice(cut)))
    const train = Pairs.tokenize(await Effect.runPromise(Pairs.read(join(dir, "train.jsonl"))), encode)
    const heldout = Pairs.tokenize(await Effect.runPromise(Pairs.read(join(dir, "heldout.jsonl"))), encode)

    const model = RewardModel.init(config, rng.split("init"))
    const trainer = Train.make(model, { learningRate: 1e-2 })
    const before = await Train.evaluate(model, heldout)
    const order = Array.from({ length: train.numRows }, (_, i) => i)
    let acc = 0
    for (let epoch = 0; epoch < 40 && acc < 0.95; epoch++) {
      rng.shuffle(order)
      for (let s = 0; s + 64 <= order.length; s += 64) {
        const batch = train.slice(s, s + 64)
        const out = await Effect.runPromise(trainer.stage.run(batch))
        expect(out.getChild("margin")!.length).toBe(64)
      }
      acc = await Train.evaluate(model, heldout)
    }
    console.log(`reward model (${backend}): held-out pair accuracy ${before.toFixed(3)} → ${acc.toFixed(3)} after ${trainer.steps()} steps, last loss ${trainer.lastLoss().toFixed(4)}`)
    expect(acc).toBeGreaterThanOrEqual(0.9)

    // Save, load through the plugin registry's path, and score rollouts: correct answers outrank wrong ones.
    await Effect.runPromise(RewardModel.save(join(dir, "rm"), model))
    const reward = await Effect.runPromise(Plugin.instantiate(plugin, { checkpoint: join(dir, "rm") }, "rewards[0].config"))
    const rollouts: Array<Conformance.Row> = []
    for (let a = 0; a < 10; a++) {
      rollouts.push({ prompt: `${a} 3`, completion: `${a}`, completionIds: [a], groupId: a })
      rollouts.push({ prompt: `${a} 3`, completion: `${(a + 1) % 10}`, completionIds: [(a + 1) % 10], groupId: a })
    }
    // makeBatch's prompt ids are code units; this vocabulary's ids replace them.
    const batch = Conformance.makeBatch(rollouts)
    const cols = Object.fromEntries(batch.schema.fields.map((f, i) => [f.name, batch.getChildAt(i)!]))
    cols.prompt_ids = Columns.int32ListFromRows(rollouts.map((r) => encodePrompt(r.prompt!)))
    const input = Reward.withSignal(Reward.inputFromBatch(Batch.fromData(Batch.Rollouts, cols as any)))
    const scores = await reward.score(input)
    let wins = 0
    for (let a = 0; a < 10; a++) if (scores[2 * a] > scores[2 * a + 1]) wins++
    expect(wins).toBeGreaterThanOrEqual(9)

    trainer.dispose()
    model.dispose()
  }, 240_000)

  test("a missing head file is a clear error", async () => {
    const r = await Effect.runPromise(Effect.result(RewardModel.load(join(dir, "nowhere"))))
    expect(r._tag === "Failure" && r.failure.message).toMatch(/cannot read the scalar head \(is this a reward-model checkpoint\?\)/)
  })

  test("a malformed pairs file names the line", async () => {
    writeFileSync(join(dir, "bad.jsonl"), '{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": 3}\n')
    const r = await Effect.runPromise(Effect.result(Pairs.read(join(dir, "bad.jsonl"))))
    expect(r._tag === "Failure" && r.failure.message).toMatch(/bad\.jsonl:2: needs string fields prompt, chosen, rejected/)
  })
})
