/** @r1flow/grpo: GRPO advantages, losses and policy update; AdamW; the SFT trainer. */
export * as Advantages from "./Advantages.js"
export * as Guard from "./Guard.js"
export * as Loss from "./Loss.js"
export * as Optimizer from "./Optimizer.js"
export * as DynamicSampling from "./DynamicSampling.js"
