export type { QueueSource, ReceivedMessage, ReceiveOptions } from "./queue-source.js";
export { runConsumer } from "./run-consumer.js";
export type { ConsumerOptions, ConsumerStats, QueueConsumer } from "./run-consumer.js";
export { AzureQueueSource } from "./azure-queue-source.js";
export type { AzureQueueSourceOptions } from "./azure-queue-source.js";
export { RedisStreamSource } from "./redis-stream-source.js";
export type { RedisStreamSourceOptions } from "./redis-stream-source.js";
export { AmqpSource } from "./amqp-source.js";
export type { AmqpSourceOptions } from "./amqp-source.js";
