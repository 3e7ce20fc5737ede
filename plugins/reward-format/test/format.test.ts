import { fileURLToPath } from "node:url"
import { Conformance, Plugin, RewardStage } from "@r1flow/core"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import plugin, { Format } from "../src/index.js"

const reward = (mode: "strict" | "soft" | "tag-count") => Effect.runPromise(Plugin.instantiate(plugin, { mode }, "config"))
const scores = async (mode: "strict" | "soft" | "tag-count", completions: Array<string>, prompt = "") =>
  Conformance.score(await reward(mode), completions.map((completion) => ({ completion, prompt })))

const good = "<think>\n2 + 2 = 4\n</think>\n<answer>\n4\n</answer>\n"

describe("format", () => {
  it("strict: the whole completion, each tag once, only whitespace outside the blocks", async () => {
    expect(
      await scores("strict", [
        good,
        "<think>a</think><answer>b</answer>",
        "  <think>a</think>  \n <answer>b</answer>  ",
        "Sure! <think>a</think><answer>b</answer>", // text before
        "<think>a</think><answer>b</answer> thanks", // text after
        "<think>a</think> so <answer>b</answer>", // text between
        "<think><think>a</think></think><answer>b</answer>", // nested
        "<think>a</think><answer>b</answer><answer>c</answer>", // repeated
        "<think>a <answer>x</answer></think><answer>b</answer>", // answer inside think
        "</think><think>a<answer>b</answer>", // wrong order
        "<answer>b</answer><think>a</think>",
        "<think>a</think>",
        ""
      ])
    ).toEqual([1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
  })

  it("soft: a think block followed by an answer block, anywhere", async () => {
    expect(
      await scores("soft", [
        good,
        "Sure! <think>a</think> so <answer>b</answer> thanks",
        "<think><think>a</think></think><answer>b</answer>",
        "<answer>b</answer><think>a</think>",
        "<think>a</think><answer>b",
        "<think>a</answer></think>",
        "the answer is 4",
        ""
      ])
    ).toEqual([1, 1, 1, 0, 0, 0, 0, 0])
  })

  it("tag-count: 0.25 per tag present exactly once", async () => {
    expect(await scores("tag-count", [good, "<think>a</think>", "<think><think></think><answer>x", "no tags", ""])).toEqual([1, 0.5, 0.5, 0, 0])
  })

  it("the template's <think> prefix opens the block for the completion; a prompt ending in <think> does not", async () => {
    const opened = Conformance.makeInput([{ prompt: "User: 2+2?", completion: "a</think><answer>b</answer>" }], { completionPrefix: "<think>" })
    expect(Array.from(await (await reward("strict")).score(opened))).toEqual([1])
    expect(await scores("strict", ["a</think><answer>b</answer>"], "User: 2+2?\nAssistant: <think>")).toEqual([0])
  })

  it("1e6-character outputs are scanned linearly", async () => {
    const huge = ["<think>" + "x".repeat(1e6) + "</think><answer>1</answer>", "<think>".repeat(150_000), "<think>" + "</think>".repeat(120_000)]
    expect(await scores("strict", huge)).toEqual([1, 0, 0])
    expect(await scores("soft", huge)).toEqual([1, 0, 0])
    expect(Format.tagCount(huge[2])).toBe(0.25)
  })

  it("defaults to strict and rejects unknown modes", async () => {
    expect(await Effect.runPromise(Effect.map(Plugin.instantiate(plugin, undefined, "c"), (r) => r.name))).toBe("format")
    const err = await Effect.runPromise(Effect.flip(Plugin.instantiate(plugin, { mode: "loose" }, "rewards[0].config")))
    expect(err.message).toContain("rewards[0].config.mode")
  })

  it("loads through the plugin registry and runs in a reward stage", async () => {
    const path = fileURLToPath(new URL("../src/index.ts", import.meta.url))
    const loaded = await Effect.runPromise(Plugin.load(path, { kind: "reward" }))
    expect(loaded.name).toBe("format")
    const stage = await Effect.runPromise(RewardStage.load({ rewards: [{ plugin: path, weight: 1, onError: "fail", timeoutMs: 1000, config: { mode: "soft" } }] }, { isolation: "in-process" }))
    const out = await Effect.runPromise(stage.run(Conformance.makeBatch([{ completion: good }, { completion: "no" }])))
    expect(Array.from(out.getChild("reward_format")!.toArray() as Float32Array)).toEqual([1, 0])
  })

  for (const mode of ["strict", "soft", "tag-count"] as const) {
    it(`passes the conformance suite (${mode})`, async () => {
      for (const r of await Conformance.run(plugin, { config: { mode } })) expect(r.ok, `${r.check}: ${r.detail}`).toBe(true)
    })
  }
})
