import { MemoryLeaseBackend } from "../../src/lease-backends/memory.js";
import { PartitionedRateLimiter } from "../../src/limiter/partitioned-rate-limiter.js";
import type { PartitionedRateLimiterOptions } from "../../src/limiter/options.js";

/** Options of {@link readyMemoryLimiter}: the limiter's, without the backend. */
export type ReadyLimiterOptions = Omit<PartitionedRateLimiterOptions, "backend"> & { backend?: MemoryLeaseBackend };

/**
 * readyMemoryLimiter creates a limiter on a memory backend (real time) and waits until it holds
 * all `minPartitions` (default: every partition). Fails clearly after 5 s.
 */
export async function readyMemoryLimiter(options: ReadyLimiterOptions): Promise<{ limiter: PartitionedRateLimiter; backend: MemoryLeaseBackend }> {
  const backend = options.backend ?? new MemoryLeaseBackend();
  // A memory backend grants at once: nothing was granted before it existed.
  const limiter = new PartitionedRateLimiter({ leaseTtlMs: 2000, minPartitions: options.partitions, ...options, backend });
  const partitions = options.partitions ?? 1;
  const want = (options.minPartitions ?? partitions) * ((options.limit ?? 0) / partitions);
  const deadline = Date.now() + 5000;
  while (limiter.capacity < want - 1e-9) {
    if (Date.now() > deadline) throw new Error(`limiter ${options.resource} holds ${limiter.capacity} of ${want} units after 5 s`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return { limiter, backend };
}
