/**
 * partitioned-rate-limiter/consumers/redis-streams: a `QueueSource` for `runConsumer` that reads a
 * Redis stream through a consumer group, with an injected ioredis client (an optional peer
 * dependency: `npm install ioredis`).
 */
export { RedisStreamSource } from "../../flow/consumers/redis-stream-source.js";
export type { RedisStreamClient, RedisStreamSourceOptions } from "../../flow/consumers/redis-stream-source.js";
