/**
 * LoRA runs (`model.lora`) as a user runs them: checkpoints hold the adapters (PEFT) and the base's record,
 * never the base or a reference; a run killed mid-GRPO and resumed ends bitwise identical to an
 * uninterrupted one; export writes the merged model or, with `--adapter`, a PEFT adapter directory; and a
 * base that changed after the run started is refused, naming the file.
 */
import { Checkpoint, Lora, Transformer } from "@r1flow/model"
import * as tf from "@tensorflow/tfjs"
import { Effect } from "effect"
import { appendFileSync, existsSync, readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { arithmetic, engine, expectSameEnd, finalEval, finalState, killedRun, pretrain, r1flow, runDir, tempRun, tinyRecipe } from "./support/launch.js"

const setup = () => tempRun("lora", tinyRecipe({
  seed: 5,
  task: arithmetic(32, 2),
  model: { dModel: 16, nLayers: 2, nHeads: 2, nKvHeads: 1, dFf: 32, maxSeqLen: 128, lora: { rank: 2, alpha: 4 } },
  stages: [
    pretrain(2),
    {
      stage: "grpo",
      config: {
        steps: 3, promptsPerStep: 2, groupSize: 2, sampling: { maxNewTokens: 6, temperature: 1 },
        rewards: [{ plugin: "@r1flow/reward-format", config: { mode: "tag-count" } }],
        update: { loss: { beta: 0.05 }, optimizer: { learningRate: 0.05 } }
      }
    },
    finalEval(2, 1, 6)
  ]
}))

const load = <A>(e: Effect.Effect<A, unknown>) => Effect.runPromise(e)

describe("LoRA runs", () => {
  it("checkpoint adapters + the base record, resume bitwise, export merged or as a PEFT adapter, refuse a changed base", async () => {
    const { file, runs, base } = setup()
    const a = engine({ command: "run", arg: file })
    expect(a.status, a.stderr).toBe(0)
    const dir = runDir(a)
    const A = finalState(dir)
    const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8"))
    // 2 blocks × 7 Linear layers × (in + out) · r: q 16→16, k,v 16→8, o 16→16, gate,up 16→32, down 32→16.
    expect(manifest.lora).toEqual({ rank: 2, alpha: 4, targets: ["q", "k", "v", "o", "gate", "up", "down"], trainable: 2 * 2 * (32 + 24 + 24 + 32 + 48 + 48 + 48) })
    const policy = join(dir, "checkpoints", A.latest, "policy")
    expect(readdirSync(policy).sort()).toEqual(["adapter_config.json", "adapter_model.safetensors", "base.json"])
    expect(existsSync(join(dir, "checkpoints", A.latest, "reference"))).toBe(false)
    expect(JSON.parse(readFileSync(join(policy, "base.json"), "utf8")).dir).toBe("base")

    // Killed while writing checkpoint 4 (GRPO's second step: 2 pretrain checkpoints, one per GRPO step), then resumed.
    const killed = killedRun(file, runs, "4")
    const c = engine({ command: "resume", arg: killed })
    expect(c.status, c.stderr).toBe(0)
    expectSameEnd(finalState(killed), A)

    // Export: merged (a plain model that differs from the base), and the adapters alone.
    const merged = join(base, "merged"), adapter = join(base, "adapter")
    const m = r1flow(["export", dir, merged])
    expect(m.status, m.stderr).toBe(0)
    expect(m.stdout).toContain("merging the LoRA adapters")
    const p = r1flow(["export", dir, adapter, "--adapter"])
    expect(p.status, p.stderr).toBe(0)
    expect(readdirSync(adapter).sort()).toEqual(["adapter_config.json", "adapter_model.safetensors"])
    expect(JSON.parse(readFileSync(join(adapter, "adapter_config.json"), "utf8"))).toMatchObject({ peft_type: "LORA", r: 2, lora_alpha: 4, base_model_name_or_path: join(dir, "base") })
    // The merged export equals base + PEFT adapter, and the adapters did move the model.
    const plain = await load(Checkpoint.load(merged))
    const adapted = await load(Lora.loadPeft(adapter, await load(Checkpoint.load(join(dir, "base")))))
    const baseModel = await load(Checkpoint.load(join(dir, "base")))
    const ids = [[3, 4, 5, 6, 7]]
    const logits = (model: Transformer.Model) => tf.tidy(() => Transformer.forward(model, tf.tensor2d(ids, [1, 5], "int32")).dataSync() as Float32Array)
    const [x, y, z] = [logits(plain), logits(adapted), logits(baseModel)]
    for (let i = 0; i < x.length; i++) expect(Math.abs(x[i] - y[i])).toBeLessThan(1e-5 * (1 + Math.abs(y[i])))
    expect(x.some((v, i) => Math.abs(v - z[i]) > 1e-4)).toBe(true)
    for (const model of [plain, adapted, baseModel]) model.dispose()

    // A full fine-tune has no adapter to export; a changed base is refused by resume and export.
    appendFileSync(join(dir, "base", "config.json"), " ")
    const refused = r1flow(["export", dir, join(base, "again")])
    expect(refused.status).not.toBe(0)
    expect(refused.stderr).toMatch(/base[/\\]config\.json: the LoRA base model changed since the run started/)
  }, 300_000)
})
