import { AdaptiveRateController, type RateFactorChange } from "../../src/flow/adaptive-rate-controller.js";
import { MemoryLeaseBackend } from "../../src/lease-backends/memory.js";
import { PartitionedRateLimiter } from "../../src/limiter/partitioned-rate-limiter.js";
import { VirtualClock } from "../../src/testing/virtual-clock.js";

async function setup() {
  const clock = new VirtualClock(1000);
  const backend = new MemoryLeaseBackend({ clock });
  const limiter = new PartitionedRateLimiter({ resource: "aimd", limit: 100, intervalMs: 1000, partitions: 4, backend, clock, leaseTtlMs: 2000, minPartitions: 4 });
  await clock.advance(100);
  expect(limiter.capacity).toBe(100);
  return { clock, limiter };
}

async function teardown(clock: VirtualClock, limiter: PartitionedRateLimiter, controller: AdaptiveRateController) {
  controller.close();
  const closing = limiter.close();
  await clock.advance(1000);
  await closing;
  expect(clock.pendingTimers).toBe(0);
}

test("a throttle multiplies the factor; one decrease per interval; floor; additive recovery to exactly 1", async () => {
  const { clock, limiter } = await setup();
  const controller = new AdaptiveRateController({ limiter, clock, intervalMs: 500, decreaseFactor: 0.5, minFactor: 0.2, increaseStep: 0.1 });
  const changes: RateFactorChange[] = [];
  controller.on("change", (c) => changes.push(c));
  expect(controller.factor).toBe(1);

  limiter.reportThrottle();
  expect(controller.factor).toBe(0.5);
  expect(limiter.stats().rateFactor).toBe(0.5);
  limiter.reportThrottle(); // replies to requests sent before the decrease: no second cut
  limiter.reportThrottle();
  expect(controller.factor).toBe(0.5);

  await clock.advance(499);
  limiter.reportThrottle();
  expect(controller.factor).toBe(0.5);
  await clock.advance(1);
  limiter.reportThrottle();
  expect(controller.factor).toBe(0.25);
  await clock.advance(500);
  limiter.reportThrottle();
  expect(controller.factor).toBe(0.2); // floored
  expect(limiter.stats().rateFactor).toBe(0.2);
  const increasesAtFloor = controller.stats().increases;

  // Quiet from here: +0.1 per 500 ms, never above 1.
  await clock.advance(500);
  expect(controller.factor).toBeCloseTo(0.3, 9);
  await clock.advance(500 * 12);
  expect(controller.factor).toBe(1);
  expect(limiter.stats().rateFactor).toBe(1);
  expect(controller.stats().increases - increasesAtFloor).toBe(8);
  const increases = controller.stats().increases;
  await clock.advance(5000);
  expect(controller.stats().increases).toBe(increases); // the timer stops at 1
  expect(changes.filter((c) => c.reason === "decrease").map((c) => c.factor).slice(0, 2)).toEqual([0.5, 0.25]);
  expect(changes.filter((c) => c.reason === "decrease").at(-1)!.factor).toBe(0.2);
  expect(changes.at(-1)).toEqual({ factor: 1, previous: expect.closeTo(0.9, 9), reason: "increase" });
  expect(controller.stats()).toMatchObject({ throttles: 6, decreases: 3, closed: false });
  expect(changes.length).toBe(controller.stats().decreases + controller.stats().increases);
  await teardown(clock, limiter, controller);
});

test("throttles within the tolerance neither cut nor block recovery; a throttle stops recovery", async () => {
  const { clock, limiter } = await setup();
  const controller = new AdaptiveRateController({ limiter, clock, intervalMs: 1000, toleratedThrottles: 2 });
  limiter.reportThrottle();
  limiter.reportThrottle();
  expect(controller.factor).toBe(1);
  await clock.advance(1001); // the first two age out of the window
  limiter.reportThrottle();
  limiter.reportThrottle();
  expect(controller.factor).toBe(1);
  limiter.reportThrottle({ retryAfterMs: 100 });
  expect(controller.factor).toBeCloseTo(0.7, 9);
  expect(limiter.stats().pausedForMs).toBe(100); // the Retry-After pause stays with the limiter
  // Recovery waits for a quiet interval after the decrease.
  await clock.advance(999);
  expect(controller.factor).toBeCloseTo(0.7, 9);
  await clock.advance(1);
  expect(controller.factor).toBeCloseTo(0.75, 9);
  limiter.reportThrottle(); // tolerated: recovery goes on
  await clock.advance(1000);
  expect(controller.factor).toBeCloseTo(0.8, 9);
  await teardown(clock, limiter, controller);
});

test("close detaches: later throttles change nothing and no timer is left", async () => {
  const { clock, limiter } = await setup();
  const controller = new AdaptiveRateController({ limiter, clock, intervalMs: 200 });
  limiter.reportThrottle();
  expect(controller.factor).toBeCloseTo(0.7, 9);
  controller.close();
  controller.close();
  limiter.reportThrottle();
  await clock.advance(2000);
  expect(controller.factor).toBeCloseTo(0.7, 9);
  expect(controller.stats().closed).toBe(true);
  expect(limiter.listenerCount("throttled")).toBe(0);
  await teardown(clock, limiter, controller);
});

test("bad options name the option", () => {
  const clock = new VirtualClock();
  const limiter = new PartitionedRateLimiter({ resource: "aimd-bad", limit: 10, intervalMs: 1000, partitions: 1, backend: new MemoryLeaseBackend({ clock }), clock });
  expect(() => new AdaptiveRateController({ limiter, decreaseFactor: 1 })).toThrow(/decreaseFactor/);
  expect(() => new AdaptiveRateController({ limiter, minFactor: 0 })).toThrow(/minFactor/);
  expect(() => new AdaptiveRateController({ limiter, intervalMs: Number.NaN })).toThrow(/intervalMs/);
  expect(() => new AdaptiveRateController({ limiter: {} as PartitionedRateLimiter })).toThrow(/limiter/);
  void limiter.close();
});

test("regression: after a throttle on a one-partition holder, a cost that no longer fits one shrunken burst takes a second partition instead of waiting for the factor to recover", async () => {
  // 50/s over 5 partitions, 10 slices: a burst of 1 unit per partition; a factor of 0.7 makes it
  // 0.7, so a cost of 1 fits only across two partitions. Waiting for AIMD to climb back left gaps
  // of 7-13 s between admissions.
  const clock = new VirtualClock(1000);
  const limiter = new PartitionedRateLimiter({ resource: "aimd-gap", limit: 50, intervalMs: 1000, partitions: 5, backend: new MemoryLeaseBackend({ clock }), clock, leaseTtlMs: 2000 });
  const aimd = new AdaptiveRateController({ limiter, clock });
  const admit = async () => {
    const t0 = clock.now();
    let done = false;
    const p = limiter.acquire(1).then(() => (done = true));
    while (!done) await clock.advance(10);
    await p;
    return clock.now() - t0;
  };
  for (let i = 0; i < 20; i++) {
    await admit();
    await clock.advance(300);
  }
  limiter.reportThrottle({ retryAfterMs: 1000 });
  const waited = await admit();
  expect(waited).toBeLessThan(1500);
  aimd.close();
  void limiter.close();
  await clock.advance(3000);
});
