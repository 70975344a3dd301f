import { MemoryLeaseBackend } from "../../src/lease-backends/memory.js";
import { PartitionedRateLimiter } from "../../src/limiter/partitioned-rate-limiter.js";
import { VirtualClock } from "../../src/testing/virtual-clock.js";

// A Retry-After pause longer than the held leases' remaining validity: the queue must resume at
// the pause's end (the leases are renewed meanwhile), not wait for new capacity forever.
test("a waiter queued behind a pause longer than the lease TTL is admitted when the pause ends", async () => {
  const clock = new VirtualClock(1000);
  const backend = new MemoryLeaseBackend({ clock });
  const limiter = new PartitionedRateLimiter({ resource: "pause", limit: 10, intervalMs: 1000, partitions: 2, backend, clock, leaseTtlMs: 1000, minPartitions: 2 });
  await clock.advance(100);
  expect(limiter.capacity).toBe(10);
  limiter.reportThrottle({ retryAfterMs: 5000 });
  const pausedAt = clock.now();
  let admittedAt = -1;
  const waiting = limiter.acquire(1).then(() => (admittedAt = clock.now()));
  await clock.advance(5500);
  expect(admittedAt).toBeGreaterThanOrEqual(pausedAt + 5000);
  expect(admittedAt).toBeLessThan(pausedAt + 5200);
  await waiting;
  const closing = limiter.close();
  await clock.advance(1000);
  await closing;
  expect(clock.pendingTimers).toBe(0);
});

test("acquire() with a timeout shorter than a running pause fails at once, not at the timeout", async () => {
  const clock = new VirtualClock(1000);
  const limiter = new PartitionedRateLimiter({ resource: "pause-timeout", limit: 10, intervalMs: 1000, partitions: 2, backend: new MemoryLeaseBackend({ clock }), clock, leaseTtlMs: 1000, minPartitions: 2 });
  await clock.advance(100);
  limiter.pauseFor(5000);
  const started = clock.now();
  const error = await limiter.acquire(1, { timeoutMs: 300 }).catch((e: unknown) => e);
  expect(clock.now()).toBe(started);
  expect((error as Error).message).toMatch(/paused for 5000 ms more/);
  void limiter.close();
  await clock.advance(6000);
});
