import { Redis } from "ioredis";
import { PartitionedRateLimiter } from "partitioned-rate-limiter";
import { RedisLeaseBackend } from "partitioned-rate-limiter/redis";

const redis = new Redis(process.env.REDIS_URL ?? "redis://127.0.0.1:6379", {
  enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 2000,
});
redis.on("error", (error) => console.error("redis:", error.message));
const backend = new RedisLeaseBackend({ client: redis, keyPrefix: "prl:" });

const limiter = new PartitionedRateLimiter({ resource: "reports-api", limit: 100, intervalMs: 1000, partitions: 10, backend });
await limiter.acquire();
console.log(`admitted; keys: ${(await redis.keys("prl:{reports-api}:*")).sort().join(" ")}`);
await limiter.close();
await redis.quit();
