/**
 * The language-consistency reward's two modes, timed: `trigram` (each sentence identified by
 * franc-min) against `script` (words counted by Unicode script), over 1000 chains of thought of about
 * 300 characters.
 *
 * Run (from the repo root, after building the bench and the plugin):
 *
 *   npx tsc --build tools/bench/tsconfig.lib.json plugins/reward-language-consistency/tsconfig.lib.json
 *   node tools/bench/dist/language-bench.js [rounds]
 *
 * The plugin is loaded as a trainer loads it, through the plugin registry by package name, and scored
 * in this thread (`reward.score` on one 1000-row input; no worker, so no Arrow transfer is timed).
 * The chains are sentences drawn by a fixed-seed generator from English prose, arithmetic steps and
 * (one chain in four) French, joined up to ~300 characters. The two modes alternate `rounds` times
 * (default 9, after one warm-up each); it prints each mode's median CPU time per batch and per chain
 * (CPU time: on a shared machine wall time mostly measures the neighbours) and trigram/script.
 */
import { Conformance, Plugin, type Reward } from "@r1flow/core"
import { Effect } from "effect"
import { median } from "./Timing.js"

const CHAINS = 1000
const CHARS = 300

const ENGLISH = [
  "First I need to find how many apples are left.",
  "She had twelve apples and gave away five of them.",
  "Let me check the result by working backwards.",
  "Wait, the question asks for the difference, not the sum.",
  "The length is twice the width of the garden.",
  "So we round up to the next whole box."
]
const MATHS = ["3 + 4 = 7, carry the 1.", "12 * 4 = 48.", "Then 3x + 5 = 20, so x = 5.", "48 - 6 = 42 and 42 / 7 = 6."]
const FRENCH = ["Elle avait douze pommes et en a donné cinq.", "Il faut multiplier le prix par le nombre de personnes.", "Donc il en reste sept."]

/** A fixed-seed linear congruential generator in [0, 1), so every run times the same chains. */
const generator = (seed: number) => () => {
  seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0
  return seed / 2 ** 32
}

/** `CHAINS` completions whose chains of thought are ~`CHARS` characters of drawn sentences. */
const chains = (): Array<Conformance.Row> => {
  const next = generator(1)
  const pick = (pool: ReadonlyArray<string>) => pool[Math.floor(next() * pool.length)]
  return Array.from({ length: CHAINS }, (_, i) => {
    const sentences: Array<string> = []
    while (sentences.join(" ").length < CHARS) {
      const r = next()
      sentences.push(pick(i % 4 === 3 && r < 0.5 ? FRENCH : r < 0.7 ? ENGLISH : MATHS))
    }
    return { prompt: "", completion: `<think>${sentences.join(" ")}</think><answer>7</answer>` }
  })
}

const main = Effect.gen(function*() {
  const rounds = Number(process.argv[2] ?? 9)
  const plugin = yield* Plugin.load("@r1flow/reward-language-consistency", { kind: "reward" })
  const rows = chains()
  const input = Conformance.makeInput(rows)
  const meanChars = rows.reduce((n, r) => n + r.completion.length, 0) / rows.length
  const modes = ["trigram", "script"] as const
  const rewards: Record<string, Reward.Reward> = {}
  for (const mode of modes) rewards[mode] = (yield* Plugin.instantiate(plugin, { mode }, `language-bench ${mode}`)) as Reward.Reward
  const seconds: Record<string, Array<number>> = { trigram: [], script: [] }
  const means: Record<string, number> = {}
  // Alternating rounds, so a neighbour's burst does not land on one mode only; the first is warm-up.
  for (let round = 0; round <= rounds; round++) {
    for (const mode of modes) {
      const { cpu, scores } = yield* Effect.promise(async () => {
        const started = process.cpuUsage()
        const scores = await rewards[mode].score(input)
        const used = process.cpuUsage(started)
        return { cpu: (used.user + used.system) / 1e6, scores }
      })
      if (round > 0) seconds[mode].push(cpu)
      means[mode] = scores.reduce((a, b) => a + b, 0) / scores.length
    }
  }
  console.log(`${CHAINS} chains of thought, completions of ${meanChars.toFixed(0)} characters on average; ${rounds} rounds, CPU time`)
  for (const mode of modes) {
    const s = median(seconds[mode])
    console.log(`${mode.padEnd(8)} ${(s * 1000).toFixed(1)} ms per batch, ${((s / CHAINS) * 1e6).toFixed(1)} µs per chain (mean score ${means[mode].toFixed(3)})`)
  }
  console.log(`trigram / script: ${(median(seconds.trigram) / median(seconds.script)).toFixed(1)}x`)
})

Effect.runPromise(main).catch((e) => {
  console.error(e)
  process.exit(1)
})
