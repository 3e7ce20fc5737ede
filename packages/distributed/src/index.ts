/** @r1flow/distributed: rollout workers on NATS JetStream. */
export {}
