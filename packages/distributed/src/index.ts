/** @r1flow/distributed: rollout workers on NATS JetStream, Arrow IPC on the wire. */
export * as Connection from "./Connection.js"
export * as NatsServer from "./NatsServer.js"
export * as Queues from "./Queues.js"
export * as Trainer from "./Trainer.js"
export * as Weights from "./Weights.js"
export * as Wire from "./Wire.js"
export * as Worker from "./Worker.js"
