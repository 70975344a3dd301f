import { AdaptiveRateController, MemoryLeaseBackend, PartitionedRateLimiter } from "partitioned-rate-limiter";

const limiter = new PartitionedRateLimiter({
  resource: "partner-api", limit: 50, intervalMs: 1000, partitions: 5, backend: new MemoryLeaseBackend(), leaseTtlMs: 2000,
});
const aimd = new AdaptiveRateController({ limiter, decreaseFactor: 0.7, increaseStep: 0.05, intervalMs: 1000 });
aimd.on("change", ({ factor, reason }) => console.log(`rate factor ${factor.toFixed(2)} (${reason})`));

limiter.reportThrottle({ retryAfterMs: 0 });   // what the retrying clients do on each 429/503
await new Promise((resolve) => setTimeout(resolve, 1_500));
console.log(`stats().rateFactor = ${limiter.stats().rateFactor.toFixed(2)}`);

aimd.close();
await limiter.close();
