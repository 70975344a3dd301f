import { ConfigError } from "../../src/errors/config-error.js";
import { StaleMessageError } from "../../src/errors/stale-message-error.js";
import { runConsumer, type ConsumerErrorCategory } from "../../src/flow/consumers/run-consumer.js";
import { undecodableMessage, type DeadLetterReason, type Delivery, type QueueSource } from "../../src/flow/consumers/queue-source.js";
import { MemoryLeaseBackend } from "../../src/lease-backends/memory.js";
import { PartitionedRateLimiter } from "../../src/limiter/partitioned-rate-limiter.js";
import { VirtualClock } from "../../src/testing/virtual-clock.js";

// runConsumer's decisions on time, on virtual time, with an in-memory queue: renewal cadence and
// the stale rule, redelivery delays, the window at a pause, concurrency apart from the window.
// The same behaviours run against real queues in test/integration/consumers-*.test.ts.

interface Stored {
  readonly id: string;
  readonly body: number | null;
  deliveries: number;
  visibleAt: number;
}

/** A queue in memory with a visibility timeout, on the virtual clock. */
class MemoryQueue implements QueueSource<number> {
  readonly name = "memory";
  readonly maxBatch = 10;
  readonly stored: Stored[] = [];
  readonly acked: string[] = [];
  readonly dead: { id: string; reason: DeadLetterReason }[] = [];
  readonly nacks: { id: string; delayMs: number }[] = [];
  readonly renewals: number[] = [];
  receives = 0;
  /** Whether a renewal still finds the message ours. */
  owned: (id: string) => boolean = () => true;

  constructor(private readonly clock: VirtualClock, readonly visibilityMs: number) {}

  add(bodies: (number | null)[]): void {
    for (const body of bodies) this.stored.push({ id: `m${this.stored.length}`, body, deliveries: 0, visibleAt: 0 });
  }

  async receive(max: number): Promise<Delivery<number>[]> {
    this.receives++;
    const now = this.clock.now();
    const out: Delivery<number>[] = [];
    for (const m of this.stored) {
      if (out.length >= max) break;
      if (m.visibleAt > now) continue;
      m.deliveries++;
      m.visibleAt = now + this.visibilityMs;
      out.push(m.body === null ? undecodableMessage(m.id, m.deliveries, new SyntaxError("bad payload")) : { id: m.id, body: m.body, deliveryCount: m.deliveries });
    }
    return out;
  }

  async ack(m: Delivery<number>): Promise<void> {
    this.acked.push(m.id);
    this.remove(m.id);
  }

  async nack(m: Delivery<number>, delayMs: number): Promise<void> {
    if (!this.owned(m.id)) throw new StaleMessageError(this.name, m.id, "taken over");
    this.nacks.push({ id: m.id, delayMs });
    const stored = this.stored.find((s) => s.id === m.id);
    if (stored) stored.visibleAt = this.clock.now() + delayMs;
  }

  async renew(ms: readonly Delivery<number>[]): Promise<boolean[]> {
    this.renewals.push(this.clock.now());
    return ms.map((m) => {
      const ok = this.owned(m.id);
      const stored = this.stored.find((s) => s.id === m.id);
      if (ok && stored) stored.visibleAt = this.clock.now() + this.visibilityMs;
      return ok;
    });
  }

  async deadLetter(m: Delivery<number>, reason: DeadLetterReason): Promise<void> {
    this.dead.push({ id: m.id, reason });
    this.remove(m.id);
  }

  async close(): Promise<void> {}

  private remove(id: string): void {
    const at = this.stored.findIndex((s) => s.id === id);
    if (at >= 0) this.stored.splice(at, 1);
  }
}

async function setUp(limit = 10, visibilityMs = 3000) {
  const clock = new VirtualClock(1000);
  const backend = new MemoryLeaseBackend({ clock });
  const limiter = new PartitionedRateLimiter({ resource: "consumer", limit, intervalMs: 1000, partitions: 1, backend, clock, leaseTtlMs: 2000, minPartitions: 1 });
  await clock.advance(100);
  expect(limiter.capacity).toBe(limit);
  const queue = new MemoryQueue(clock, visibilityMs);
  const errors: { category: ConsumerErrorCategory; id: string | undefined }[] = [];
  const finish = async (stop: () => Promise<unknown>) => {
    const stopping = stop();
    await clock.advance(3000);
    await stopping;
    const closing = limiter.close();
    await clock.advance(1000);
    await closing;
  };
  return { clock, limiter, queue, errors, finish };
}

test("nothing is received while the limiter is paused (window 0); the messages are handled once after the pause", async () => {
  const { clock, limiter, queue, errors, finish } = await setUp(10, 3000);
  queue.add([1, 2]);
  const handled: [number, number][] = [];
  limiter.pauseFor(7000);
  // Paused: the window is 0 and nothing is received until the pause ends.
  const consumer = runConsumer({ limiter, source: queue, clock, handler: (n) => void handled.push([n, clock.now()]), onError: (_e, category, m) => errors.push({ category, id: m?.id }) });
  await clock.advance(500);
  expect(consumer.stats().window).toBe(0);
  expect(queue.receives).toBe(0);
  await clock.advance(7000);
  expect(handled.map(([n]) => n)).toEqual([1, 2]);
  expect(queue.acked).toEqual(["m0", "m1"]);
  await finish(() => consumer.stop());
  expect(errors).toEqual([]);
});

test("held messages are renewed while they wait for admission; a lost one is never handled and reported stale", async () => {
  const { clock, limiter, queue, errors, finish } = await setUp(10, 3000);
  queue.add([1, 2, 3]);
  const handled: number[] = [];
  const consumer = runConsumer({
    limiter, source: queue, clock,
    handler: (n) => {
      handled.push(n);
      // The service throttles the first call: the others wait 5 s, longer than the visibility.
      if (n === 1) limiter.reportThrottle({ retryAfterMs: 5000 });
    },
    onError: (_e, category, m) => errors.push({ category, id: m?.id }),
  });
  await clock.advance(50);
  expect(handled).toEqual([1]);
  // Message 3 is taken over by someone else (it is theirs now); message 2 stays ours.
  queue.owned = (id) => id !== "m2";
  queue.stored.find((m) => m.id === "m2")!.visibleAt = Infinity;
  await clock.advance(6000);
  expect(handled).toEqual([1, 2]);
  expect(errors).toEqual([{ category: "stale", id: "m2" }]);
  // Renewed about every 1000 ms while waiting.
  const gaps = queue.renewals.slice(1).map((t, i) => t - queue.renewals[i]!);
  expect(queue.renewals.length).toBeGreaterThanOrEqual(4);
  for (const gap of gaps) {
    expect(gap).toBeGreaterThanOrEqual(1000);
    expect(gap).toBeLessThanOrEqual(1300);
  }
  await finish(() => consumer.stop());
});

test("failures come back after a doubling, jittered delay and are dead-lettered on the last delivery", async () => {
  const { clock, limiter, queue, errors, finish } = await setUp(10, 30_000);
  queue.add([1]);
  const consumer = runConsumer({
    limiter, source: queue, clock, random: () => 1 - 1e-9, maxDeliveries: 4, redeliveryDelayMs: 1000,
    handler: () => {
      throw new Error("always");
    },
    onError: (_e, category, m) => errors.push({ category, id: m?.id }),
  });
  await clock.advance(10_000);
  expect(queue.nacks.map((n) => Math.round(n.delayMs))).toEqual([1000, 2000, 4000]);
  expect(queue.dead.map((d) => [d.id, d.reason.category])).toEqual([["m0", "handler"]]);
  expect(errors.map((e) => e.category)).toEqual(["handler", "handler", "handler", "handler"]);
  await finish(() => consumer.stop());
});

test("undecodable and bad-cost messages are dead-lettered at once with their category; the mean cost is not touched", async () => {
  const { clock, limiter, queue, errors, finish } = await setUp(10, 30_000);
  queue.add([1, null, 2, 3]);
  const handled: number[] = [];
  const consumer = runConsumer({
    limiter, source: queue, clock, pullAheadMs: 500,
    cost: (m) => (m.body === 2 ? Number.NaN : 1),
    handler: (n) => void handled.push(n),
    onError: (_e, category, m) => errors.push({ category, id: m?.id }),
  });
  await clock.advance(1000);
  expect(handled).toEqual([1, 3]);
  expect(queue.dead.map((d) => [d.id, d.reason.category])).toEqual([["m1", "decode"], ["m2", "cost"]]);
  expect(errors).toEqual([{ category: "decode", id: "m1" }, { category: "cost", id: "m2" }]);
  expect(consumer.stats().window).toBe(5);
  await finish(() => consumer.stop());
});

test("concurrency caps handlers, not the window", async () => {
  const { clock, limiter, queue, finish } = await setUp(100, 30_000);
  queue.add(Array.from({ length: 100 }, (_, i) => i));
  let running = 0;
  let most = 0;
  const consumer = runConsumer({
    limiter, source: queue, clock, concurrency: 3,
    handler: async () => {
      most = Math.max(most, ++running);
      await new Promise<void>((resolve) => clock.setTimeout(resolve, 1000));
      running--;
    },
  });
  await clock.advance(500);
  expect(most).toBe(3);
  expect(consumer.stats().running).toBe(3);
  // The window (100/s × 1 s) holds waiting messages beside the 3 running.
  expect(consumer.stats().waiting).toBeGreaterThan(3);
  await finish(() => consumer.stop());
});

test("bad options are ConfigErrors naming the option", () => {
  const limiter = { acquire: () => Promise.resolve() } as unknown as PartitionedRateLimiter;
  const source = new MemoryQueue(new VirtualClock(), 1000);
  const handler = () => undefined;
  for (const [options, name] of [
    [{ concurrency: 0 }, "concurrency"],
    [{ maxDeliveries: 0 }, "maxDeliveries"],
    [{ maxDeliveries: 2.5 }, "maxDeliveries"],
    [{ redeliveryDelayMs: -1 }, "redeliveryDelayMs"],
    [{ redeliveryDelayMs: 5000, maxRedeliveryDelayMs: 1000 }, "maxRedeliveryDelayMs"],
    [{ pullAheadMs: 0 }, "pullAheadMs"],
    [{ maxWaiting: 0 }, "maxWaiting"],
    [{ cost: -1 }, "cost"],
    [{ handler: "x" }, "handler"],
  ] as const) {
    let caught: unknown;
    try {
      runConsumer({ limiter, source, handler, ...(options as object) });
    } catch (error) {
      caught = error;
    }
    expect(ConfigError.is(caught)).toBe(true);
    expect((caught as ConfigError).option).toBe(name);
  }
});
