/** @r1flow/datasets: synthetic R1 tasks (arithmetic, countdown), their base corpora, and loaders for real data. */
export * as Arithmetic from "./Arithmetic.js"
export * as ColdStart from "./ColdStart.js"
export * as Corpus from "./Corpus.js"
export * as Countdown from "./Countdown.js"
export * as Loaders from "./Loaders.js"
export * as Task from "./Task.js"
