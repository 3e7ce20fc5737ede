/** @r1flow/model: the policy transformer on TensorFlow.js, its log-probs, checkpoints and rollouts. */
export * as Checkpoint from "./Checkpoint.js"
export * as Generate from "./Generate.js"
export * as HfConfig from "./HfConfig.js"
export * as LogProbs from "./LogProbs.js"
export * as Random from "./Random.js"
export * as Rollout from "./Rollout.js"
export * as Safetensors from "./Safetensors.js"
export * as Transformer from "./Transformer.js"
