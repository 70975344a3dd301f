import * as promClient from "prom-client";
import { MemoryLeaseBackend, PartitionedRateLimiter } from "partitioned-rate-limiter";
import { registerLimiterMetrics } from "partitioned-rate-limiter/metrics";

const limiter = new PartitionedRateLimiter({
  resource: "billing-api", limit: 50, intervalMs: 1000, partitions: 5, backend: new MemoryLeaseBackend(), leaseTtlMs: 2000,
});
const unregister = registerLimiterMetrics(limiter, { registry: promClient.register, promClient });

await limiter.acquire(3);
const text = await promClient.register.metrics();   // what GET /metrics would serve
console.log(text.split("\n").filter((line) => line.startsWith("partitioned_rate_limiter_admitted_units_total")).join("\n"));

unregister();
await limiter.close();
