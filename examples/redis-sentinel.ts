import { Redis } from "ioredis";
import { PartitionedRateLimiter } from "partitioned-rate-limiter";
import { RedisLeaseBackend } from "partitioned-rate-limiter/redis";

// REDIS_SENTINELS: comma-separated host:port of the Sentinels; REDIS_SENTINEL_NAME: the monitored name.
const sentinels = (process.env.REDIS_SENTINELS ?? "127.0.0.1:26379").split(",").map((node) => {
  const [host, port] = node.split(":");
  return { host: host!, port: Number(port) };
});
const redis = new Redis({
  sentinels, name: process.env.REDIS_SENTINEL_NAME ?? "prl",
  enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 2000, failoverDetector: true,
});
redis.on("error", (error: Error) => console.error("redis:", error.message));
await new Promise<void>((resolve) => redis.once("ready", () => resolve()));
const backend = new RedisLeaseBackend({ client: redis });

const limiter = new PartitionedRateLimiter({ resource: "reports-api", limit: 100, intervalMs: 1000, partitions: 10, backend });
await limiter.acquire();
console.log("admitted through the Sentinels' current primary");
await limiter.close();
await redis.quit();
redis.disconnect(); // quit() leaves failoverDetector's Sentinel connections open
