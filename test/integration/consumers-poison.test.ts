import { performance } from "node:perf_hooks";
import { runConsumer, type ConsumerErrorCategory } from "../../src/flow/consumers/run-consumer.js";
import type { PartitionedRateLimiter } from "../../src/limiter/partitioned-rate-limiter.js";
import { amqpHarness, azureHarness, countingSource, range, redisHarness, shortId, waitUntil, type Harness, type TestQueue } from "../support/consumer-harness.js";
import { readyMemoryLimiter } from "../support/flow-limiter.js";
import { IOREDIS_PACKAGE, IOREDIS_VERSION } from "../support/ioredis.js";
import { openSource } from "./fixtures/consumer-sources.js";

// Issue #18, reproductions 1, 2 and 4, on a real Azurite queue, Redis stream and RabbitMQ queue:
// a message that cannot be decoded, costs that are invalid or can never be admitted, and a message
// whose handler always fails. Each must end in the dead-letter destination, reported through
// onError with its own category, without blocking the others, without hot-looping the queue,
// and without spoiling the pull window. Each test prints its figures before asserting them.

interface Run {
  handled: Map<number, number>;
  errors: { category: ConsumerErrorCategory; text: string }[];
  receivesPerSecond: number;
  receives: number;
  elapsedMs: number;
  windowAfter: number;
  remaining: number;
  dead: string[];
}

const harnesses: Harness[] = [azureHarness(), redisHarness(), amqpHarness()];

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
  let limit: number;

  const setUp = async (quota: number) => {
    limit = quota;
    ({ limiter } = await readyMemoryLimiter({ resource: `poison-${shortId()}`, limit, intervalMs: 1000, partitions: 5 }));
  };

  beforeEach(async () => {
    queue = await harness.newQueue();
  });

  afterEach(async () => {
    await limiter?.close();
    await queue.drop();
  });

  /** Consumes until `done` holds or `maxMs` passed (a run that never finishes is measured too), then stops. */
  const consume = async (
    options: Partial<Parameters<typeof runConsumer<{ n: number }>>[0]>,
    handler: (n: number, deliveryCount: number | null) => void,
    done: (run: Pick<Run, "handled" | "errors">) => boolean,
    maxMs: number,
    idleMs = 0,
  ): Promise<Run> => {
    const { source: inner, dispose } = await openSource<{ n: number }>(queue.spec("c1"));
    const source = countingSource(inner);
    const handled = new Map<number, number>();
    const errors: Run["errors"] = [];
    const consumer = runConsumer<{ n: number }>({
      limiter,
      source,
      pullAheadMs: 100,
      redeliveryDelayMs: 200,
      ...options,
      handler: (body, message) => {
        handled.set(body.n, (handled.get(body.n) ?? 0) + 1);
        handler(body.n, message.deliveryCount);
      },
      onError: (error, category) => errors.push({ category, text: String(error) }),
    });
    const started = performance.now();
    await waitUntil("the run to finish", () => done({ handled, errors }), maxMs).catch(() => undefined);
    const elapsedMs = performance.now() - started;
    // An idle consumer must not spin either.
    if (idleMs > 0) await new Promise((r) => setTimeout(r, idleMs));
    const windowAfter = consumer.stats().window;
    await consumer.stop();
    await dispose();
    return {
      handled,
      errors,
      receivesPerSecond: source.maxReceivesPerSecond(),
      receives: source.receiveTimes.length,
      elapsedMs,
      windowAfter,
      remaining: await queue.remaining(),
      dead: await queue.deadLetters(),
    };
  };

  const categories = (run: Run, category: ConsumerErrorCategory) => run.errors.filter((e) => e.category === category).length;
  const handledOnce = (run: Run, ns: number[]) => ns.filter((n) => run.handled.get(n) === 1).length;

  test("1. an undecodable message is dead-lettered with onError 'decode'; the other 11 are handled once", async () => {
    await setUp(50);
    const texts = range(12).map((b) => JSON.stringify(b));
    texts[2] = "{not json";
    await queue.sendRaw(texts);
    const good = range(12).map((b) => b.n).filter((n) => n !== 2);
    const run = await consume({}, () => undefined, (r) => handledOnce(r as Run, good) === good.length && r.errors.some((e) => e.category === "decode"), 8000);
    await waitUntil("the dead letter", async () => (await queue.deadLetters()).length > 0, 3000).catch(() => undefined);
    const dead = await queue.deadLetters();
    console.log(
      `${name} #1 undecodable: ${handledOnce(run, good)}/11 handled once in ${run.elapsedMs.toFixed(0)} ms, ` +
        `dead letters ${JSON.stringify(dead)}, decode errors ${categories(run, "decode")}, receive errors ${categories(run, "receive")}, left in queue ${run.remaining}`,
    );
    expect(handledOnce(run, good)).toBe(11);
    expect(run.handled.has(2)).toBe(false);
    expect(dead).toEqual(["{not json"]);
    expect(categories(run, "decode")).toBe(1);
    expect(categories(run, "receive")).toBe(0);
    expect(run.remaining).toBe(0);
  });

  test("2. costs above the limit, undefined or throwing are dead-lettered with onError 'cost'; no hot loop, the window unharmed", async () => {
    await setUp(50);
    await queue.send(range(20));
    const bad = new Set([3, 7, 11]);
    const good = range(20).map((b) => b.n).filter((n) => !bad.has(n));
    const cost = (message: { body: { n: number } }): number => {
      if (message.body.n === 3) return 1000;
      if (message.body.n === 7) return undefined as unknown as number;
      if (message.body.n === 11) throw new Error("no cost for 11");
      return 1;
    };
    const run = await consume({ cost }, () => undefined, (r) => handledOnce(r as Run, good) === good.length && r.errors.filter((e) => e.category === "cost").length >= 3, 6000, 2000);
    console.log(
      `${name} #2 bad costs: ${handledOnce(run, good)}/17 handled once in ${run.elapsedMs.toFixed(0)} ms, ${run.receives} receives in it and 2 s idle after (at most ${run.receivesPerSecond} in any 1 s), ` +
        `cost errors ${categories(run, "cost")}, dead letters ${run.dead.length}, window after ${run.windowAfter}, left in queue ${run.remaining}`,
    );
    expect(handledOnce(run, good)).toBe(17);
    expect([...bad].some((n) => run.handled.has(n))).toBe(false);
    expect(categories(run, "cost")).toBe(3);
    expect(run.dead.map((t) => (JSON.parse(t) as { n: number }).n).sort((a, b) => a - b)).toEqual([3, 7, 11]);
    // 50/s × 100 ms at a mean cost of 1: the bad costs never entered the mean.
    expect(run.windowAfter).toBe(5);
    expect(run.receivesPerSecond).toBeLessThanOrEqual(20);
    expect(run.remaining).toBe(0);
  });

  test("4. an always-failing message is delivered maxDeliveries times with growing delays, then dead-lettered; the rest are handled", async () => {
    await setUp(20);
    await queue.send(range(30));
    const good = range(30).map((b) => b.n).filter((n) => n !== 0);
    const counts: (number | null)[] = [];
    let admissions = 0;
    limiter.on("admitted", () => admissions++);
    const run = await consume(
      { maxDeliveries: 3, redeliveryDelayMs: 300 },
      (n, deliveryCount) => {
        if (n !== 0) return;
        counts.push(deliveryCount);
        throw new Error("message 0 always fails");
      },
      (r) => handledOnce(r as Run, good) === good.length && (r.handled.get(0) ?? 0) >= 3 && r.errors.filter((e) => e.category === "handler").length >= 3,
      10_000,
    );
    await waitUntil("the dead letter", async () => (await queue.deadLetters()).length > 0, 3000).catch(() => undefined);
    const dead = await queue.deadLetters();
    console.log(
      `${name} #4 always failing: handled ${run.handled.get(0) ?? 0} times (delivery counts ${JSON.stringify(counts)}) of ${admissions} admissions in ${run.elapsedMs.toFixed(0)} ms; ` +
        `others ${handledOnce(run, good)}/29 once; dead letters ${dead.length}; handler errors ${categories(run, "handler")}`,
    );
    expect(run.handled.get(0)).toBe(3);
    expect(counts).toEqual([1, 2, 3]);
    expect(handledOnce(run, good)).toBe(29);
    expect(dead.map((t) => (JSON.parse(t) as { n: number }).n)).toEqual([0]);
    expect(categories(run, "handler")).toBe(3);
    expect(admissions).toBe(32);
    expect(run.remaining).toBe(0);
  });
});
