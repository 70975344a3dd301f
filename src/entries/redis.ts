/**
 * partitioned-rate-limiter/redis: lease backends on Redis through an injected ioredis client (an
 * optional peer dependency: `npm install ioredis`). `RedisLeaseBackend` uses one server (or one
 * Redis Cluster); `RedlockLeaseBackend` a quorum of three or more independent servers. Both run
 * the same Lua scripts, so they share this entry and its one peer.
 */
export { RedisLeaseBackend } from "../lease-backends/redis.js";
export type { RedisLeaseBackendOptions } from "../lease-backends/redis.js";
export { RedlockLeaseBackend } from "../lease-backends/redlock.js";
export type { RedlockLeaseBackendOptions } from "../lease-backends/redlock.js";
