// The consumer loop and the QueueSource contract. The sources themselves name their queue
// clients' types (ioredis, amqplib, @azure/storage-queue), so each has its own entry under
// partitioned-rate-limiter/consumers/.
export { isUndecodable, undecodableMessage } from "./queue-source.js";
export type { DeadLetterReason, Delivery, MessageInfo, QueueSource, ReceivedMessage, ReceiveOptions, UndecodableMessage } from "./queue-source.js";
export { runConsumer } from "./run-consumer.js";
export type { ConsumerErrorCategory, ConsumerOptions, ConsumerStats, ConsumerStopped, HandlerContext, QueueConsumer } from "./run-consumer.js";
