import { performance } from "node:perf_hooks";
import { runConsumer, type ConsumerErrorCategory, type QueueConsumer } from "../../src/flow/consumers/run-consumer.js";
import type { PartitionedRateLimiter } from "../../src/limiter/partitioned-rate-limiter.js";
import { azureHarness, countingSource, range, redisHarness, shortId, sleep, waitUntil, type CountingSource, type Harness, type TestQueue } from "../support/consumer-harness.js";
import { readyMemoryLimiter } from "../support/flow-limiter.js";
import { createRedis, IOREDIS_PACKAGE, IOREDIS_VERSION } from "../support/ioredis.js";
import { openSource, type TestBody } from "./fixtures/consumer-sources.js";

// Issue #18, reproduction 3, on a real Azurite queue and a real Redis stream: messages that wait
// for admission (a Retry-After pause) or run (a slow handler) longer than their visibility
// timeout / claim idle time are renewed, so a second consumer on the same queue never gets them
// and each is handled exactly once; a message the queue gave to someone else is never handled.
// RabbitMQ has no visibility timeout (a delivery is the consumer's until its channel closes).

interface Pair {
  consumers: QueueConsumer[];
  sources: CountingSource<TestBody>[];
  calls: Map<number, string[]>;
  errors: { consumer: string; category: ConsumerErrorCategory; text: string }[];
  stop(): Promise<void>;
}

const harnesses: Harness[] = [azureHarness(), redisHarness()];

beforeAll(async () => {
  console.log(`Redis rows use ${IOREDIS_PACKAGE} ${IOREDIS_VERSION}`);
  await Promise.all(harnesses.map((h) => h.start()));
}, 60_000);

afterAll(async () => {
  await Promise.allSettled(harnesses.map((h) => h.stop()));
});

describe.each(harnesses.map((h) => [h.name, h] as const))("%s", (name, harness) => {
  let queue: TestQueue;
  let limiter: PartitionedRateLimiter;

  beforeEach(async () => {
    queue = await harness.newQueue();
    ({ limiter } = await readyMemoryLimiter({ resource: `visibility-${shortId()}`, limit: 50, intervalMs: 1000, partitions: 5 }));
  });

  afterEach(async () => {
    await limiter.close();
    await queue.drop();
  });

  /** Two consumers ("a" starts first and takes everything) on one limiter and one queue. */
  const startPair = async (visibilityMs: number, handler: (n: number, consumer: string) => Promise<void> | void): Promise<Pair> => {
    const calls = new Map<number, string[]>();
    const errors: Pair["errors"] = [];
    const consumers: QueueConsumer[] = [];
    const sources: CountingSource<TestBody>[] = [];
    const disposers: (() => Promise<void>)[] = [];
    for (const id of ["a", "b"]) {
      const opened = await openSource(queue.spec(id, { visibilityMs }));
      const source = countingSource(opened.source);
      sources.push(source);
      disposers.push(opened.dispose);
      consumers.push(
        runConsumer<TestBody>({
          limiter,
          source,
          concurrency: 32,
          handler: async (body) => {
            calls.set(body.n, [...(calls.get(body.n) ?? []), id]);
            await handler(body.n, id);
          },
          onError: (error, category) => errors.push({ consumer: id, category, text: String(error) }),
        }),
      );
      // "a" takes the whole batch before "b" starts polling.
      if (id === "a") await waitUntil("consumer a to receive", () => consumers[0]!.stats().received > 0, 10_000);
    }
    return {
      consumers,
      sources,
      calls,
      errors,
      async stop() {
        await Promise.all(consumers.map((c) => c.stop()));
        await Promise.all(disposers.map((d) => d()));
      },
    };
  };

  const twice = (pair: Pair) => [...pair.calls.values()].filter((c) => c.length > 1).length;
  const settleErrors = (pair: Pair) => pair.errors.filter((e) => e.category !== "handler");

  test("3a. a 5 s Retry-After pause with 2 s visibility: waiting messages are renewed, each handled exactly once", async () => {
    const count = 10;
    await queue.send(range(count));
    const started = performance.now();
    const pair = await startPair(2000, (n) => {
      // The service answers the first request with Retry-After: 5; the others are waiting meanwhile.
      if (n === 0) limiter.reportThrottle({ retryAfterMs: 5000 });
    });
    await waitUntil("every message", () => pair.calls.size === count, 15_000).catch(() => undefined);
    // Let consumer b look for lapsed messages a while longer.
    await sleep(2500);
    const elapsed = performance.now() - started;
    const renewed = pair.consumers[0]!.stats().renewed;
    await pair.stop();
    console.log(
      `${name} #3a pause 5 s, visibility 2 s: ${pair.calls.size}/${count} handled, ${twice(pair)} twice, by b: ${[...pair.calls.values()].filter((c) => c.includes("b")).length}, ` +
        `renewals ${renewed}, settle errors ${JSON.stringify(settleErrors(pair).map((e) => `${e.category}: ${e.text.slice(0, 80)}`))}, ${elapsed.toFixed(0)} ms`,
    );
    expect(pair.calls.size).toBe(count);
    expect(twice(pair)).toBe(0);
    expect(settleErrors(pair)).toEqual([]);
    expect(renewed).toBeGreaterThan(0);
    expect(await queue.remaining()).toBe(0);
  });

  test("3b. a 2.5 s handler with 1 s visibility: running messages are renewed, each handled exactly once", async () => {
    const count = 3;
    await queue.send(range(count));
    const pair = await startPair(1000, () => sleep(2500));
    await waitUntil("every handler to finish", () => pair.calls.size === count && pair.consumers.every((c) => c.stats().inFlight === 0), 15_000).catch(() => undefined);
    await sleep(1500);
    const renewed = pair.consumers[0]!.stats().renewed;
    await pair.stop();
    console.log(
      `${name} #3b 2.5 s handler, visibility 1 s: ${pair.calls.size}/${count} handled, ${twice(pair)} twice, renewals ${renewed}, ` +
        `settle errors ${JSON.stringify(settleErrors(pair).map((e) => `${e.category}: ${e.text.slice(0, 80)}`))}`,
    );
    expect(pair.calls.size).toBe(count);
    expect(twice(pair)).toBe(0);
    expect(settleErrors(pair)).toEqual([]);
    expect(renewed).toBeGreaterThanOrEqual(count * 2);
    expect(await queue.remaining()).toBe(0);
  });

  if (name === "redis-stream") {
    test("3c. entries another consumer took over while they waited are not handled here (stale), and not acked", async () => {
      const count = 10;
      await queue.send(range(count));
      const spec = queue.spec("a", { visibilityMs: 3000 });
      if (spec.kind !== "redis") throw new Error("redis spec expected");
      const thief = createRedis(spec.url);
      // One partition of 10/s admits one message per 100 ms slice: only message 0 runs at once.
      const { limiter: slow } = await readyMemoryLimiter({ resource: `visibility-${shortId()}`, limit: 10, intervalMs: 1000, partitions: 1 });
      const { source, dispose } = await openSource(spec);
      let thiefIds: string[] = [];
      // The thief is alive: it keeps its claim fresh, so nobody reclaims the entries from it.
      const keepClaimed = setInterval(() => {
        if (thiefIds.length > 0) void thief.call("XCLAIM", spec.stream, spec.group, "thief", 0, ...thiefIds, "JUSTID");
      }, 500);
      const handled: number[] = [];
      const errors: { category: ConsumerErrorCategory; text: string }[] = [];
      let stolen = 0;
      const consumer = runConsumer<TestBody>({
        limiter: slow,
        source,
        handler: async (body) => {
          handled.push(body.n);
          if (body.n !== 0) return;
          // A Retry-After keeps the others waiting; meanwhile another consumer claims them (as
          // XAUTOCLAIM would after a long stall of this process).
          slow.reportThrottle({ retryAfterMs: 2500 });
          const pending = (await thief.call("XPENDING", spec.stream, spec.group, "-", "+", 100, "a")) as [string][];
          const ids = pending.map((row) => row[0]).filter((_, i) => i > 0);
          stolen = ids.length;
          await thief.call("XCLAIM", spec.stream, spec.group, "thief", 0, ...ids, "JUSTID");
          thiefIds = ids;
        },
        onError: (error, category) => errors.push({ category, text: String(error) }),
      });
      await sleep(4500);
      await consumer.stop();
      await dispose();
      clearInterval(keepClaimed);
      await slow.close();
      const thiefPending = (await thief.call("XPENDING", spec.stream, spec.group, "-", "+", 100, "thief")) as unknown[];
      await thief.quit();
      const stale = errors.filter((e) => e.category === "stale").length;
      console.log(`${name} #3c taken over while waiting: ${stolen} stolen, handled here ${JSON.stringify(handled)}, stale reports ${stale}, still pending for the thief ${thiefPending.length}`);
      expect(stolen).toBe(count - 1);
      expect(handled).toEqual([0]);
      expect(stale).toBe(count - 1);
      expect(thiefPending.length).toBe(count - 1);
      expect(errors.filter((e) => e.category !== "stale")).toEqual([]);
    });
  }
});
