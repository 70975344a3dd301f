// npm install partitioned-rate-limiter ioredis
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { PartitionedRateLimiter } from "partitioned-rate-limiter";
import { RedisLeaseBackend } from "partitioned-rate-limiter/redis";

// Stands in for your database client: each call is one request against the quota.
const db = {
  async insert(row: { id: number }) { await sleep(5); return row.id; },
  async query(sql: string) { await sleep(5); return [{ id: 1, sql }]; },
};

const redis = new Redis(process.env.REDIS_URL ?? "redis://127.0.0.1:6379", {
  enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 2000,
});
redis.on("error", (error) => console.error("redis:", error.message)); // the limiter retries; log, don't crash
const limiter = new PartitionedRateLimiter({
  resource: "orders-db",                          // every process sharing the quota uses this name
  limit: 500, intervalMs: 1000, partitions: 20,   // 500 units/s, 25 units/s per partition
  backend: new RedisLeaseBackend({ client: redis }),
});

// A Redis up for more than about a minute grants a new resource's first lease at once; a Redis just
// started waits 60 s + one window first: see "What it costs: waits on first use".
await limiter.acquire();                 // resolves when admitted (cost 1)
await db.insert({ id: 1 });

const rows = await limiter.schedule(() => db.query("SELECT * FROM orders"), { cost: 5, timeoutMs: 2000 });
if (limiter.tryAcquire()) { /* admitted now, never waits */ }
console.log(`read ${rows.length} row; holding ${limiter.capacity} units/s`);

await limiter.close();                   // rejects waiters, releases leases after their last slice
await redis.quit();                      // the client is yours: the limiter never closes it
