/**
 * partitioned-rate-limiter/consumers/amqp: a `QueueSource` for `runConsumer` that consumes a
 * RabbitMQ (AMQP 0-9-1) queue on an injected amqplib channel (optional peer dependencies:
 * `npm install amqplib`, and `@types/amqplib` for TypeScript, since amqplib ships no types).
 */
export { AmqpSource, AMQP_DELIVERIES_HEADER } from "../../flow/consumers/amqp-source.js";
export type { AmqpSourceOptions } from "../../flow/consumers/amqp-source.js";
