/** GSM8K from `../shared/datasets/gsm8k/` next to the repo root, or `undefined` (with the reason) when absent. */
import { existsSync, readFileSync } from "node:fs"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"

const repoRoot = (): string => {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, "nx.json"))) {
    const up = dirname(dir)
    if (up === dir) throw new Error("cannot find the repo root (no nx.json above the tests)")
    dir = up
  }
  return dir
}

/** Where GSM8K is expected. */
export const GSM8K_DIR = resolve(repoRoot(), "..", "shared", "datasets", "gsm8k")

/** One GSM8K record. */
export interface Gsm8k {
  readonly question: string
  readonly answer: string
}

const read = (split: "train" | "test"): Array<Gsm8k> =>
  readFileSync(join(GSM8K_DIR, `${split}.jsonl`), "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as Gsm8k)

/** Both splits, or `undefined` when the files are absent. */
export const gsm8k = (): { train: Array<Gsm8k>; test: Array<Gsm8k> } | undefined => {
  if (!existsSync(join(GSM8K_DIR, "train.jsonl")) || !existsSync(join(GSM8K_DIR, "test.jsonl"))) {
    console.warn(`GSM8K not found in ${GSM8K_DIR} (expected train.jsonl and test.jsonl): skipping the GSM8K tests`)
    return undefined
  }
  return { train: read("train"), test: read("test") }
}
