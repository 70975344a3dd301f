import { spawn } from "node:child_process";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { runConsumer, type ConsumerStats } from "../../src/flow/consumers/run-consumer.js";
import type { ReceivedMessage } from "../../src/flow/consumers/queue-source.js";
import type { PartitionedRateLimiter } from "../../src/limiter/partitioned-rate-limiter.js";
import { auditSlidingWindows } from "../support/audit.js";
import { amqpHarness, azureHarness, range, redisHarness, shortId, waitUntil, type TestQueue } from "../support/consumer-harness.js";
import { readyMemoryLimiter } from "../support/flow-limiter.js";
import { IOREDIS_PACKAGE, IOREDIS_VERSION } from "../support/ioredis.js";
import { openSource, type TestBody } from "./fixtures/consumer-sources.js";

// Runs runConsumer against a real Azurite queue, a real Redis stream and a real RabbitMQ queue:
// exactly-once processing at the limiter's pace, redelivery after handler failures, and recovery
// of a SIGKILLed consumer's in-flight messages. About 30 s in all. The Redis rows use the ioredis
// package PRL_IOREDIS names (see test/support/ioredis.ts).

const ROOT = join(__dirname, "..", "..");
const CHILD = join(ROOT, "test/integration/fixtures/consumer-child.ts");
const LIMIT = 50;
/** Scheduling slack allowed between an admission and its handler call (see the first test). */
const HANDLER_JITTER_MS = 10;

/** Runs an in-process consumer until `until` holds, then stops it; returns its stats. */
async function consume(
  queue: TestQueue,
  limiter: PartitionedRateLimiter,
  fastRedelivery: boolean,
  handler: (body: TestBody, message: ReceivedMessage<TestBody>) => Promise<void> | void,
  until: (stats: ConsumerStats) => boolean | Promise<boolean>,
  timeoutMs: number,
): Promise<ConsumerStats> {
  const { source, dispose } = await openSource(queue.spec("parent", { visibilityMs: fastRedelivery ? 2000 : 30_000 }));
  const errors: string[] = [];
  const consumer = runConsumer({ limiter, source, handler, redeliveryDelayMs: 200, onError: (error, op) => op !== "handler" && errors.push(`${op}: ${String(error)}`) });
  try {
    await waitUntil("every message to be processed", () => until(consumer.stats()), timeoutMs);
  } finally {
    await consumer.stop();
    await dispose();
  }
  expect(errors).toEqual([]);
  return consumer.stats();
}

const harnesses = [azureHarness(), redisHarness(), amqpHarness()];

beforeAll(async () => {
  console.log(`Redis rows use ${IOREDIS_PACKAGE} ${IOREDIS_VERSION}`);
  await Promise.all(harnesses.map((h) => h.start()));
}, 60_000);

afterAll(async () => {
  await Promise.allSettled(harnesses.map((h) => h.stop()));
});

describe.each(harnesses.map((h) => [h.name, h] as const))("%s", (_name, harness) => {
  let queue: TestQueue;
  let limiter: PartitionedRateLimiter;

  beforeEach(async () => {
    queue = await harness.newQueue();
    ({ limiter } = await readyMemoryLimiter({ resource: `consumers-${shortId()}`, limit: LIMIT, intervalMs: 1000, partitions: 5 }));
  });

  afterEach(async () => {
    await limiter.close();
    await queue.drop();
  });

  test("every message is processed and acked exactly once, within the limiter's quota", async () => {
    const count = 100;
    await queue.send(range(count));
    const calls = new Map<number, number>();
    const times: number[] = [];
    const admissions: number[] = [];
    limiter.on("admitted", () => admissions.push(performance.now()));
    const started = performance.now();
    const stats = await consume(
      queue,
      limiter,
      false,
      (body) => {
        times.push(performance.now());
        calls.set(body.n, (calls.get(body.n) ?? 0) + 1);
      },
      () => calls.size === count,
      20_000,
    );
    const elapsed = performance.now() - started;
    // The limiter's promise is about admissions: audited exactly. Handler calls follow their
    // admission after a few microtasks, which a GC pause can spread over some milliseconds while
    // the next slice is admitted on time, so they are audited over windows 10 ms shorter.
    const audit = auditSlidingWindows(admissions.map((t) => ({ t, units: 1 })), LIMIT, 1000);
    const handlerAudit = auditSlidingWindows(times.map((t) => ({ t, units: 1 })), LIMIT, 1000 - HANDLER_JITTER_MS);
    console.log(`${harness.name}: ${count} messages in ${elapsed.toFixed(0)} ms, worst 1 s window ${audit.worstRatio.toFixed(2)} of ${LIMIT}/s (handler calls ${handlerAudit.worstRatio.toFixed(2)})`);
    expect([...calls.values()].every((c) => c === 1)).toBe(true);
    expect(stats.acked).toBe(count);
    expect(stats.nacked).toBe(0);
    expect(admissions.length).toBe(count);
    expect(audit.overLimitWindows).toBe(0);
    expect(handlerAudit.overLimitWindows).toBe(0);
    expect(await queue.remaining()).toBe(0);
  });

  test("messages whose handler fails on first delivery are redelivered and processed later, none lost", async () => {
    const count = 30;
    await queue.send(range(count));
    const attempts = new Map<number, number>();
    const succeeded = new Set<number>();
    const redeliveryCounts: (number | null)[] = [];
    const stats = await consume(
      queue,
      limiter,
      false,
      (body, message) => {
        const attempt = (attempts.get(body.n) ?? 0) + 1;
        attempts.set(body.n, attempt);
        if (attempt > 1) redeliveryCounts.push(message.deliveryCount);
        if (body.n % 3 === 0 && attempt === 1) throw new Error(`first delivery of ${body.n} fails`);
        if (succeeded.has(body.n)) throw new Error(`${body.n} processed twice`);
        succeeded.add(body.n);
      },
      () => succeeded.size === count,
      20_000,
    );
    const failing = range(count).filter((b) => b.n % 3 === 0).map((b) => b.n);
    expect(failing.every((n) => (attempts.get(n) ?? 0) >= 2)).toBe(true);
    expect(stats.failed).toBe(failing.length);
    expect(stats.acked).toBe(count);
    // The queue says it is a redelivery where it can (RabbitMQ classic queues only say "redelivered").
    for (const delivery of redeliveryCounts) expect(delivery === null || delivery >= 2).toBe(true);
    expect(await queue.remaining()).toBe(0);
  });

  test("a consumer SIGKILLed mid-batch: another one processes the rest, its in-flight messages included", async () => {
    const count = 40;
    await queue.send(range(count));
    const child = spawn(process.execPath, ["--import", "tsx", CHILD, JSON.stringify(queue.spec("child", { visibilityMs: 2000 }))], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    const childStarted = new Set<number>();
    const childDone = new Set<number>();
    let stderr = "";
    let buffered = "";
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    const killed = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`child never had work in flight after 20 s; stderr: ${stderr}`));
      }, 20_000);
      child.stdout.on("data", (chunk: Buffer) => {
        buffered += chunk.toString();
        const lines = buffered.split("\n");
        buffered = lines.pop() ?? "";
        for (const line of lines) {
          const [word, n] = line.split(" ");
          if (word === "start") childStarted.add(Number(n));
          if (word === "done") childDone.add(Number(n));
        }
        // Some messages finished (acked or about to be), several still inside their handler.
        if (childDone.size >= 3 && childStarted.size - childDone.size >= 3 && child.exitCode === null) {
          clearTimeout(timer);
          child.kill("SIGKILL");
          resolve();
        }
      });
      child.once("exit", (code, signal) => {
        if (signal !== "SIGKILL") reject(new Error(`child exited early (code ${code}); stderr: ${stderr}`));
      });
    });
    await killed;
    await exited;
    const inFlightAtKill = [...childStarted].filter((n) => !childDone.has(n));
    expect(inFlightAtKill.length).toBeGreaterThanOrEqual(3);

    const handled = new Set<number>();
    const started = performance.now();
    await consume(
      queue,
      limiter,
      true,
      (body) => void handled.add(body.n),
      // Also wait for the queue to drain: a message the child finished but had not acked comes
      // back too, and is processed a second time (at least once, not exactly once, after a crash).
      // Nothing held either: stop() would give it back, and RabbitMQ counts only ready messages.
      async (stats) => range(count).every((b) => handled.has(b.n) || childDone.has(b.n)) && stats.inFlight === 0 && (await queue.remaining()) === 0,
      20_000,
    );
    console.log(`${harness.name}: child killed with ${inFlightAtKill.length} in its handler after ${childDone.size} done; the rest recovered in ${(performance.now() - started).toFixed(0)} ms`);
    expect(inFlightAtKill.every((n) => handled.has(n))).toBe(true);
    expect(await queue.remaining()).toBe(0);
  });
});
