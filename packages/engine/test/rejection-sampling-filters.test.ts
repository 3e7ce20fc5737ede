/**
 * R1's rejection-sampling filters one by one on hand-written completions, the first-filter-wins counting
 * and the shares (computed by hand), the direct-answer rows (checked by the format and accuracy rewards
 * themselves), and one tiny run of the stage whose set, report and metrics must tell the same story.
 */
import { Backend } from "@r1flow/backend"
import { Conformance, Metrics, Plugin, type Reward } from "@r1flow/core"
import { tableFromIPC, type Table } from "apache-arrow"
import { Effect, Schema } from "effect"
import { existsSync, readFileSync } from "node:fs"
import { beforeAll, describe, expect, it } from "vitest"
import * as RejectionFilters from "../src/RejectionFilters.js"
import * as Run from "../src/Run.js"
import * as RejectionSampling from "../src/stages/rejection-sampling.js"
import { run, tempDir } from "./helpers.js"
import { arithmetic, testRecipe, tokenizer, writeRecipe } from "./support/recipes.js"

type Sample = RejectionFilters.Sample

/** A sample every filter accepts; tests change one field at a time. */
const good = (patch: Partial<Sample> = {}): Sample => ({
  completion: "<think>\n3 plus 4 is 7.\n</think>\n<answer>7</answer>",
  finishReason: "stop",
  hasAnswer: true,
  isCode: false,
  rule: [{ score: 1, threshold: 1 }, { score: 1, threshold: 1 }],
  judge: undefined,
  language: { score: 1, threshold: 0.9 },
  ...patch
})

const options: RejectionFilters.Options = { requireStop: true, maxParagraphChars: 40, maxPerPrompt: 2 }
const first = (sample: Sample, o: RejectionFilters.Options = options) => RejectionFilters.firstContentRejection(sample, o)

describe("each filter on hand-written completions", () => {
  it("unfinished: a cut completion, only under requireStop", () => {
    expect(first(good({ finishReason: "length" }))).toBe("unfinished")
    expect(first(good({ finishReason: "length" }), { ...options, requireStop: false })).toBeUndefined()
    expect(first(good())).toBeUndefined()
  })

  it("incorrect: a rule score below its threshold; NaN means the reward did not apply, but one must have", () => {
    expect(first(good({ rule: [{ score: 1, threshold: 1 }, { score: 0, threshold: 1 }] }))).toBe("incorrect")
    expect(first(good({ rule: [{ score: 0.4, threshold: 0.5 }] }))).toBe("incorrect")
    expect(first(good({ rule: [{ score: 0.5, threshold: 0.5 }] }))).toBeUndefined()
    expect(first(good({ rule: [{ score: NaN, threshold: 1 }, { score: 1, threshold: 1 }] }))).toBeUndefined()
    expect(first(good({ rule: [{ score: NaN, threshold: 1 }] }))).toBe("incorrect")
    expect(first(good({ rule: [] }))).toBe("incorrect")
    expect(RejectionFilters.failedRules(good({ rule: [{ score: 0, threshold: 1 }, { score: NaN, threshold: 1 }, { score: 0.2, threshold: 0.5 }, { score: 1, threshold: 1 }] }))).toEqual([0, 2])
  })

  it("judge: rows without a reference answer are judged by the judge, not the rules; without a judge they are not known correct", () => {
    const noAnswer = { hasAnswer: false, rule: [{ score: 0, threshold: 1 }] }
    expect(first(good({ ...noAnswer, judge: { score: 0.3, threshold: 0 } }))).toBeUndefined()
    expect(first(good({ ...noAnswer, judge: { score: -0.3, threshold: 0 } }))).toBe("judge")
    expect(first(good({ ...noAnswer, judge: { score: NaN, threshold: 0 } }))).toBe("judge")
    expect(first(good(noAnswer))).toBe("incorrect")
    // a row with an answer is the rules' to judge: a low judge score does not reject it
    expect(first(good({ judge: { score: -5, threshold: 0 } }))).toBeUndefined()
  })

  it("mixed_language: below its threshold; NaN (a chain without words) is not mixed", () => {
    expect(first(good({ language: { score: 0.8, threshold: 0.9 } }))).toBe("mixed_language")
    expect(first(good({ language: { score: 0.9, threshold: 0.9 } }))).toBeUndefined()
    expect(first(good({ language: { score: NaN, threshold: 0.9 } }))).toBeUndefined()
    expect(first(good({ language: undefined }))).toBeUndefined()
  })

  it("long_paragraph: the longest line in code points, against maxParagraphChars", () => {
    expect(RejectionFilters.longestParagraph("ab\nabcde\n\nabc")).toBe(5)
    // 4 code points in 8 UTF-16 units: characters are counted, not units
    expect(RejectionFilters.longestParagraph("𝑥𝑦𝑧𝑤")).toBe(4)
    expect(RejectionFilters.longestParagraph("")).toBe(0)
    // the whole line counts, tags too: 7 + 25 + 8 = 40 passes, one more code point does not
    expect(first(good({ completion: `<think>${"x".repeat(25)}</think>\n<answer>7</answer>` }))).toBeUndefined()
    expect(first(good({ completion: `<think>${"x".repeat(26)}</think>\n<answer>7</answer>` }))).toBe("long_paragraph")
    expect(first(good({ completion: `<think>\n${"x".repeat(40)}\n</think>\n<answer>7</answer>` }))).toBeUndefined()
  })

  it("code_block: a fence or an indented block, unless the row is a code task", () => {
    expect(RejectionFilters.hasCodeBlock("so\n```python\nprint(1)\n```\n")).toBe(true)
    expect(RejectionFilters.hasCodeBlock("so:\n\n    x = 1\n")).toBe(true)
    expect(RejectionFilters.hasCodeBlock("\tx = 1")).toBe(true)
    // an indented line right after text continues the paragraph (Markdown), and 3 spaces are no indent
    expect(RejectionFilters.hasCodeBlock("so:\n    x = 1")).toBe(false)
    expect(RejectionFilters.hasCodeBlock("so:\n\n   x = 1")).toBe(false)
    expect(RejectionFilters.hasCodeBlock("7 * 3 = 21, `inline` is fine")).toBe(false)
    const fenced = "<think>\n```\n1+1\n```\n</think><answer>2</answer>"
    expect(first(good({ completion: fenced }))).toBe("code_block")
    expect(first(good({ completion: fenced, isCode: true }))).toBeUndefined()
  })

  it("dedupe normalises whitespace and case", () => {
    expect(RejectionFilters.normalise("  The Answer\n\tis   <b>7</b> ")).toBe("the answer is <b>7</b>")
    expect(RejectionFilters.normalise("A\r\nB")).toBe(RejectionFilters.normalise("a b"))
  })
})

describe("first filter wins, and the shares add up", () => {
  it("a sample failing several filters is counted once, under the first", () => {
    // cut, wrong, mixed, with a fence: unfinished
    const all = good({ finishReason: "length", rule: [{ score: 0, threshold: 1 }], language: { score: 0, threshold: 0.9 }, completion: "```x```" })
    expect(first(all)).toBe("unfinished")
    expect(first(all, { ...options, requireStop: false })).toBe("incorrect")
    expect(first({ ...all, finishReason: "stop", rule: [{ score: 1, threshold: 1 }] })).toBe("mixed_language")
    expect(first({ ...all, finishReason: "stop", rule: [{ score: 1, threshold: 1 }], language: undefined, completion: "x".repeat(41) + "```" })).toBe("long_paragraph")
  })

  it("selectGroup: duplicates after normalising, then the per-prompt cap; counts and rates by hand", () => {
    const a = good({ completion: "<think>a b</think><answer>7</answer>" })
    const group = [
      good({ finishReason: "length" }), // 0 unfinished
      a, // 1 kept
      good({ completion: " <think>A\n\t b</think><answer>7</answer>\n" }), // 2 duplicate of 1 (case, whitespace)
      good({ rule: [{ score: 0, threshold: 1 }] }), // 3 incorrect
      good({ completion: "<think>b</think><answer>7</answer>" }), // 4 kept (the cap is 2)
      good({ completion: "<think>c</think><answer>7</answer>" }), // 5 per_prompt_cap
      good({ completion: "<think>ab</think><answer>7</answer>" }), // not a duplicate: the space between words stays
      good({ completion: "<think>a b</think><answer>7</answer>" }) // 6 duplicate (before the cap)
    ]
    const out = RejectionFilters.selectGroup(group, options)
    expect(out.kept).toEqual([1, 4])
    expect(out.rejectedBy).toEqual(["unfinished", undefined, "duplicate", "incorrect", undefined, "per_prompt_cap", "per_prompt_cap", "duplicate"])
    const second = RejectionFilters.selectGroup([good({ language: { score: 0.5, threshold: 0.9 } }), a, a], options)
    const counts = RejectionFilters.addGroup(RejectionFilters.addGroup(RejectionFilters.emptyCounts(), out), second)
    // 11 samples: kept 2 + 1, unfinished 1, incorrect 1, mixed_language 1, duplicate 2 + 1, per_prompt_cap 2
    expect(counts.sampled).toBe(11)
    expect(counts.kept).toBe(3)
    expect(counts.rejected).toEqual({ unfinished: 1, incorrect: 1, judge: 0, mixed_language: 1, long_paragraph: 0, code_block: 0, duplicate: 3, per_prompt_cap: 2 })
    const m = RejectionFilters.metrics("rs", counts, 2)
    expect(m["rs/accept_rate"]).toBeCloseTo(3 / 11, 12)
    expect(m["rs/rejected/duplicate"]).toBe(3)
    expect(m["rs/rejected_rate/duplicate"]).toBeCloseTo(3 / 11, 12)
    expect(m["rs/rejected_rate/per_prompt_cap"]).toBeCloseTo(2 / 11, 12)
    expect(m["rs/rejected_rate/unfinished"]).toBeCloseTo(1 / 11, 12)
    expect(m["rs/rejected_rate/judge"]).toBe(0)
    expect(m["rs/direct"]).toBe(2)
    const shares = RejectionFilters.FILTERS.reduce((s, f) => s + m[`rs/rejected_rate/${f}`], m["rs/accept_rate"])
    expect(shares).toBeCloseTo(1, 12)
    expect(RejectionFilters.summary(counts, 2)).toBe(
      "kept 3 of 11 sampled completions (27.3 %); rejected: unfinished 1 (9.1 %), incorrect 1 (9.1 %), mixed_language 1 (9.1 %), duplicate 3 (27.3 %), per_prompt_cap 2 (18.2 %); direct rows 2"
    )
  })
})

describe("direct-answer rows", () => {
  it("their count makes directShare of the set", () => {
    expect(RejectionFilters.directCount(30, 0)).toBe(0)
    expect(RejectionFilters.directCount(30, 0.25)).toBe(10) // 10 / (30 + 10)
    expect(RejectionFilters.directCount(3, 0.5)).toBe(3)
    expect(RejectionFilters.directCount(7, 0.3)).toBe(3) // 0.3 · 7 / 0.7 = 3
    expect(RejectionFilters.directCount(1, 0.6)).toBe(2) // 1.5 rounds up (0.6 / 0.4 is 1.4999… in binary)
    expect(RejectionFilters.directCount(1, 0.2)).toBe(0) // 0.25
    expect(() => RejectionFilters.directCount(3, 1)).toThrow(/directShare must be in \[0, 1\), got 1/)
  })

  it("the completion is what the strict format and accuracy rewards accept, with or without the template's <think>", async () => {
    // the plugins as a recipe loads them (the engine may not import plugins)
    const reward = (spec: string, config: unknown) =>
      run(Effect.flatMap(Plugin.load(spec, { kind: "reward" }), (p) => Plugin.instantiate(p, config, spec))) as Promise<Reward.Reward>
    const format = await reward("@r1flow/reward-format", { mode: "strict" })
    const accuracy = await reward("@r1flow/reward-math-accuracy", {})
    for (const prefix of ["", "<think>"]) {
      const rows = [{ prompt: "What is 3 + 4?", completion: RejectionFilters.directCompletion(prefix, "7"), answer: "7" }]
      expect(Array.from(await format.score(Conformance.makeInput(rows, { completionPrefix: prefix })))).toEqual([1])
      expect(Array.from(await accuracy.score(Conformance.makeInput(rows, { completionPrefix: prefix })))).toEqual([1])
    }
    expect(RejectionFilters.directCompletion("<think>", "7")).toBe("</think><answer>7</answer>")
    expect(RejectionFilters.directCompletion("", "7")).toBe("<think></think><answer>7</answer>")
  })

  it("come from train rows with a reference answer, in the listed tasks", () => {
    const row = (id: string, answer: string, task?: string) => ({ id, question: id, answer, metadata: task === undefined ? {} : { task } })
    const train = [row("a", "1", "math"), row("b", " ", "math"), row("c", "3", "countdown"), row("d", "4")]
    expect(RejectionSampling.directCandidates(train, undefined).map((r) => r.id)).toEqual(["a", "c", "d"])
    expect(RejectionSampling.directCandidates(train, ["math"]).map((r) => r.id)).toEqual(["a"])
  })
})

describe("reward roles", () => {
  const decode = (c: Record<string, unknown>) =>
    Schema.decodeUnknownSync(RejectionSampling.Config)({ prompts: 1, samples: 1, sampling: { maxNewTokens: 1, temperature: 0 }, ...c })
  it("the judge is appended (named judge), the language reward found by plugin or by languageReward, the rest are rules", () => {
    const rewards = [{ plugin: "@r1flow/reward-math-accuracy", name: "accuracy" }, { plugin: "@r1flow/reward-language-consistency", name: "lang" }]
    const config = decode({ rewards, judge: { plugin: "./rm.js" } })
    expect(RejectionSampling.rewardList(config).map((e) => e.name)).toEqual(["accuracy", "lang", "judge"])
    expect(RejectionSampling.rolesOf(config, ["accuracy", "lang", "judge"])).toEqual({ rule: [0], judge: 2, language: 1 })
    expect(RejectionSampling.rolesOf(decode({ rewards, languageReward: "accuracy" }), ["accuracy", "lang"])).toEqual({ rule: [1], judge: undefined, language: 0 })
  })
})

const arrow = (path: string): Table => tableFromIPC(readFileSync(path))
const column = (t: Table, name: string) => Array.from(t.getChild(name)!, (v) => v as string)

describe("one tiny run of the stage", () => {
  beforeAll(async () => {
    await Backend.init()
  })

  it("the written set, the report and the metrics agree with the per-filter counts", async () => {
    const stage = {
      stage: "rejection-sampling",
      name: "rs",
      config: {
        prompts: 3, samples: 4, maxPerPrompt: 1, requireStop: false, directShare: 0.5, maxParagraphChars: 8,
        sampling: { maxNewTokens: 4, temperature: 1 },
        // threshold 0: format never rejects, so what is rejected is rejected by the other filters
        rewards: [{ plugin: "@r1flow/reward-format", name: "format" }], thresholds: { format: 0 }
      }
    }
    // the sft stage reads the set back: its `kind` column is one more than `Sft.Input` asks for
    const sft = { stage: "sft", name: "rs-sft", config: { source: { kind: "set", stage: "rs" }, steps: 1, batchSize: 2, logEvery: 1 } }
    const file = writeRecipe(tempDir("rs-filters"), testRecipe({ name: "rs-filters", task: arithmetic(16, 2, ["+", "-"]), corpus: { count: 48 }, tokenizer: { ...tokenizer, splitDigits: true }, stages: [stage, sft] }))
    const lines: Array<string> = []
    const result = await run(Run.run(file, { overrides: [], log: (l) => lines.push(l) }))
    const { entries } = Metrics.readJsonl(result.dir.metrics)
    const values = entries.find((e) => e.values["rs/sampled"] !== undefined)!.values
    const report = JSON.parse(readFileSync(RejectionSampling.reportPathOf(result.dir.root, "rs"), "utf8"))
    const set = arrow(RejectionSampling.pathOf(result.dir.root, "rs"))
    const kinds = column(set, "kind")

    expect(values["rs/sampled"]).toBe(12)
    expect(report.sampled).toBe(12)
    const rejected = RejectionFilters.FILTERS.map((f) => values[`rs/rejected/${f}`])
    expect(rejected.reduce((a, b) => a + b, values["rs/kept"])).toBe(12)
    expect(RejectionFilters.FILTERS.map((f) => report.rejected[f])).toEqual(rejected)
    for (const f of RejectionFilters.FILTERS) expect(values[`rs/rejected_rate/${f}`]).toBeCloseTo(values[`rs/rejected/${f}`] / 12, 10)
    expect(values["rs/accept_rate"]).toBeCloseTo(values["rs/kept"] / 12, 10)
    expect(report.kept).toBe(values["rs/kept"])
    // format at threshold 0 never fails, so no incorrect sample blames it
    expect(report.incorrectBy).toEqual({ format: 0 })
    expect(report.config.directShare).toBe(0.5)
    expect(kinds.filter((k) => k === "reasoning").length).toBe(values["rs/kept"])
    // directShare 0.5: as many direct rows as reasoning ones (16 train rows are enough)
    expect(kinds.filter((k) => k === "direct").length).toBe(values["rs/kept"])
    expect(values["rs/direct"]).toBe(values["rs/kept"])
    expect(report.direct).toBe(values["rs/direct"])

    const prompts = column(set, "prompt"), completions = column(set, "completion")
    kinds.forEach((kind, i) => {
      if (kind === "reasoning") {
        // what the filters let through: no line over 8 code points, at most 1 per prompt
        expect(RejectionFilters.longestParagraph(completions[i])).toBeLessThanOrEqual(8)
        return
      }
      const [, a, op, b] = /^What is (\d+) ([+-]) (\d+)\?$/.exec(prompts[i])!
      const answer = op === "+" ? Number(a) + Number(b) : Number(a) - Number(b)
      expect(completions[i]).toBe(`<think></think><answer>${answer}</answer>`)
    })
    const perPrompt = new Map<string, number>()
    kinds.forEach((k, i) => k === "reasoning" && perPrompt.set(prompts[i], (perPrompt.get(prompts[i]) ?? 0) + 1))
    for (const n of perPrompt.values()) expect(n).toBe(1)
    expect(new Set(prompts.filter((_, i) => kinds[i] === "direct")).size).toBe(values["rs/direct"])

    const line = lines.find((l) => l.startsWith("[rs] kept"))!
    expect(line).toContain(`kept ${values["rs/kept"]} of 12 sampled completions`)
    expect(line).toContain(`direct rows ${values["rs/direct"]}`)
    for (const f of RejectionFilters.FILTERS) if (values[`rs/rejected/${f}`] > 0) expect(line).toContain(`${f} ${values[`rs/rejected/${f}`]} (`)
    expect(existsSync(RejectionSampling.reportPathOf(result.dir.root, "rs"))).toBe(true)
    expect(entries.some((e) => Number.isFinite(e.values["rs-sft/loss"]))).toBe(true)
  }, 180_000)
})
