import { createRetryingFetch } from "../../src/flow/retrying-fetch.js";
import { retryWithLimiter } from "../../src/flow/retry-with-limiter.js";
import { ConfigError } from "../../src/errors/config-error.js";
import { MemoryLeaseBackend } from "../../src/lease-backends/memory.js";
import { PartitionedRateLimiter } from "../../src/limiter/partitioned-rate-limiter.js";
import { VirtualClock } from "../../src/testing/virtual-clock.js";

// Issue #18, reproduction 6, on virtual time: a Retry-After pauses the limiter for at most the
// caller's remaining budget (or maxPauseMs), Retry-After: 0 means the normal backoff, and the
// options are validated.

async function setUp() {
  const clock = new VirtualClock(1000);
  const backend = new MemoryLeaseBackend({ clock });
  const limiter = new PartitionedRateLimiter({ resource: "retry", limit: 100, intervalMs: 1000, partitions: 2, backend, clock, leaseTtlMs: 2000, minPartitions: 2 });
  await clock.advance(100);
  expect(limiter.capacity).toBe(100);
  const close = async () => {
    const closing = limiter.close();
    await clock.advance(1000);
    await closing;
  };
  return { clock, limiter, close };
}

const throttled = (retryAfterMs: number | undefined) => Object.assign(new Error("429"), { status: 429, retryAfterMs });

test("Retry-After: 3600 s on a call with a 2 s budget: the 429 comes back at once and the limiter pauses for 2 s, not an hour", async () => {
  const { clock, limiter, close } = await setUp();
  let calls = 0;
  const started = clock.now();
  const result = retryWithLimiter(limiter, async () => {
    calls++;
    throw throttled(3_600_000);
  }, { maxElapsedMs: 2000, clock }).catch((e: unknown) => e);
  await clock.advance(10);
  expect((await result as { status: number }).status).toBe(429);
  expect(calls).toBe(1);
  expect(clock.now() - started).toBeLessThan(20);
  const paused = limiter.stats().pausedForMs;
  expect(paused).toBeGreaterThan(1900);
  expect(paused).toBeLessThanOrEqual(2000);
  // Another caller is admitted once the bounded pause is over.
  let admittedAt = -1;
  const other = limiter.acquire(1, { timeoutMs: 3000 }).then(() => (admittedAt = clock.now()));
  await clock.advance(2500);
  await other;
  expect(admittedAt - started).toBeGreaterThanOrEqual(2000);
  expect(admittedAt - started).toBeLessThan(2200);
  await close();
});

test("maxPauseMs bounds the pause below the budget; 0 reports the throttle without pausing", async () => {
  const { clock, limiter, close } = await setUp();
  const fail = () => retryWithLimiter(limiter, async () => { throw throttled(30_000); }, { maxElapsedMs: 60_000, maxAttempts: 1, maxPauseMs: 500, clock }).catch(() => undefined);
  await Promise.all([fail(), clock.advance(5)]);
  expect(limiter.stats().pausedForMs).toBeGreaterThan(400);
  expect(limiter.stats().pausedForMs).toBeLessThanOrEqual(500);
  await clock.advance(600);
  const throttlesBefore = limiter.stats().throttles;
  await Promise.all([retryWithLimiter(limiter, async () => { throw throttled(30_000); }, { maxAttempts: 1, maxPauseMs: 0, clock }).catch(() => undefined), clock.advance(5)]);
  expect(limiter.stats().throttles).toBe(throttlesBefore + 1);
  expect(limiter.stats().pausedForMs).toBe(0);
  await close();
});

test("Retry-After: 0 waits the normal backoff between attempts, not nothing", async () => {
  const { clock, limiter, close } = await setUp();
  const times: number[] = [];
  const result = retryWithLimiter(limiter, async () => {
    times.push(clock.now());
    if (times.length < 5) throw throttled(0);
    return "ok";
  }, { baseDelayMs: 100, maxDelayMs: 10_000, random: () => 0.5, clock });
  await clock.advance(2000);
  expect(await result).toBe("ok");
  const gaps = times.slice(1).map((t, i) => Math.round(t - times[i]!));
  // Full jitter at random 0.5: half of 100, 200, 400, 800 ms.
  expect(gaps).toEqual([50, 100, 200, 400]);
  await close();
});

test("bad retry options are ConfigErrors naming the option", () => {
  const limiter = { acquire: () => Promise.resolve() } as unknown as PartitionedRateLimiter;
  for (const [options, name] of [
    [{ maxPauseMs: -1 }, "maxPauseMs"],
    [{ maxPauseMs: Number.NaN }, "maxPauseMs"],
    [{ maxElapsedMs: -5 }, "maxElapsedMs"],
    [{ maxAttempts: 0 }, "maxAttempts"],
    [{ maxRetryAfterMs: -1 }, "maxRetryAfterMs"],
    [{ maxRetryAfterMs: "1h" }, "maxRetryAfterMs"],
    [{ retryOn: [429, "503"] }, "retryOn"],
    [{ onRetry: 5 }, "onRetry"],
  ] as const) {
    let caught: unknown;
    try {
      createRetryingFetch({ limiter, ...(options as object) });
    } catch (error) {
      caught = error;
    }
    expect(ConfigError.is(caught)).toBe(true);
    expect((caught as ConfigError).option).toBe(`createRetryingFetch(options.${name})`);
  }
  return expect(retryWithLimiter(limiter, async () => 1, { maxPauseMs: -1 })).rejects.toThrow(/retryWithLimiter\(options.maxPauseMs\)/);
});
