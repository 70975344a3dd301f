import { Redis } from "ioredis";
import { PartitionedRateLimiter } from "partitioned-rate-limiter";
import { RedlockLeaseBackend } from "partitioned-rate-limiter/redis";

// Three (or five) independent Redis servers: not replicas of one another.
const urls = (process.env.REDLOCK_URLS ?? "redis://127.0.0.1:6379,redis://127.0.0.1:6380,redis://127.0.0.1:6381").split(",");
const clients = urls.map((url) => {
  const client = new Redis(url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 2000 });
  client.on("error", (error) => console.error(`redis ${url}:`, error.message));
  return client;
});
const backend = new RedlockLeaseBackend({ clients });   // clock drift: the plan's driftFactor

const limiter = new PartitionedRateLimiter({ resource: "payments-api", limit: 100, intervalMs: 1000, partitions: 10, backend });
await limiter.acquire();
console.log(`admitted with a quorum of ${urls.length} servers; holding ${limiter.capacity} units/s`);
await limiter.close();
await Promise.all(clients.map((client) => client.quit()));
