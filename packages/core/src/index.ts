/** @r1flow/core: the contracts every r1flow package and plugin builds on. */
export * as Batch from "./Batch.js"
export * as Columns from "./Columns.js"
export * as Rng from "./Rng.js"
export * as Pipeline from "./Pipeline.js"
export * as Stage from "./Stage.js"
export * as Config from "./Config.js"
export * as Plugin from "./Plugin.js"
export * as Metrics from "./Metrics.js"
