import { MemoryLeaseBackend } from "../../src/lease-backends/memory.js";
import { PartitionedRateLimiter } from "../../src/limiter/partitioned-rate-limiter.js";
import type { PartitionedRateLimiterOptions } from "../../src/limiter/options.js";

/** Options of {@link readyMemoryLimiter}: the limiter's, without the backend. */
export type ReadyLimiterOptions = Omit<PartitionedRateLimiterOptions, "backend"> & { backend?: MemoryLeaseBackend };

/**
 * readyMemoryLimiter creates a limiter on a memory backend (real time) that already holds all
 * `minPartitions` (default: every partition): the plan is stored first with no grace, so a test
 * does not wait out the new-plan grace of `leaseTtlMs`. Fails clearly after 5 s.
 */
export async function readyMemoryLimiter(options: ReadyLimiterOptions): Promise<{ limiter: PartitionedRateLimiter; backend: MemoryLeaseBackend }> {
  const backend = options.backend ?? new MemoryLeaseBackend();
  const plan = { limit: options.limit, intervalMs: options.intervalMs, partitions: options.partitions, pools: options.pools ?? {} };
  await backend.ensurePlan(options.resource, plan, { graceMs: 0 });
  const limiter = new PartitionedRateLimiter({ leaseTtlMs: 2000, minPartitions: options.partitions, ...options, backend });
  const want = (options.minPartitions ?? options.partitions) * (options.limit / options.partitions);
  const deadline = Date.now() + 5000;
  while (limiter.capacity < want - 1e-9) {
    if (Date.now() > deadline) throw new Error(`limiter ${options.resource} holds ${limiter.capacity} of ${want} units after 5 s`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return { limiter, backend };
}
