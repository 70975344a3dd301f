import { PartitionedRateLimiter } from "../../src/limiter/partitioned-rate-limiter.js";
import { MemoryLeaseBackend } from "../../src/lease-backends/memory.js";
import { VirtualClock } from "../../src/testing/virtual-clock.js";

test("one limiter on virtual time admits at the held pace", async () => {
  const clock = new VirtualClock(1000);
  const backend = new MemoryLeaseBackend({ clock });
  const limiter = new PartitionedRateLimiter({
    resource: "smoke", limit: 100, intervalMs: 1000, partitions: 10, backend, clock, leaseTtlMs: 3000, minPartitions: 2,
  });
  await clock.advance(4200); // a new plan grants nothing for leaseTtlMs, then the next retry (<= 750 ms) takes two
  expect(limiter.stats().heldPartitions).toBe(2);
  let admitted = 0;
  const start = clock.now();
  const loop = (async () => {
    while (clock.now() - start < 10_000) {
      await limiter.acquire(1);
      admitted++;
    }
  })();
  await clock.advance(10_500);
  await loop;
  // A saturated single caller takes every partition: 100/s for ~10 s, minus the ramp-up.
  expect(admitted).toBeGreaterThan(850);
  expect(admitted).toBeLessThanOrEqual(1000);
  const closing = limiter.close();
  await clock.advance(1000);
  await closing;
  expect(clock.pendingTimers).toBe(0);
});
