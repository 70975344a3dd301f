import { performance } from "node:perf_hooks";
import { runConsumer } from "../../src/flow/consumers/run-consumer.js";
import { auditSlidingWindows } from "../support/audit.js";
import { countingSource, range, redisHarness, shortId, sleep } from "../support/consumer-harness.js";
import { readyMemoryLimiter } from "../support/flow-limiter.js";
import { IOREDIS_PACKAGE, IOREDIS_VERSION } from "../support/ioredis.js";
import { openSource, type TestBody } from "./fixtures/consumer-sources.js";

// Issue #18, reproduction 5: slow handlers must not cap throughput. Handlers run beside the pull
// window (which holds only messages waiting for admission), so at a 50/s quota 1 s, 2 s and 4 s
// handlers all complete about 50 messages per second, given `concurrency` for them. Run on a
// Redis stream only: the point is the consumer's accounting, which is the same for every source,
// and Redis is the fastest of the three to feed 1,250 messages through (about 25 s in all).

const LIMIT = 50;
const harness = redisHarness();

beforeAll(async () => {
  console.log(`Redis rows use ${IOREDIS_PACKAGE} ${IOREDIS_VERSION}`);
  await harness.start();
}, 60_000);

afterAll(async () => {
  await harness.stop();
});

test.each([1000, 2000, 4000])("%i ms handlers at a 50/s quota complete about 50 messages per second", async (handlerMs) => {
  const queue = await harness.newQueue();
  const { limiter } = await readyMemoryLimiter({ resource: `throughput-${shortId()}`, limit: LIMIT, intervalMs: 1000, partitions: 5 });
  const measureMs = 4000;
  // Enough for the ramp (one handler duration), the measured span and a margin.
  await queue.send(range(Math.ceil((LIMIT * (handlerMs + measureMs + 1500)) / 1000)));
  const { source: inner, dispose } = await openSource<TestBody>(queue.spec("c1"));
  const source = countingSource(inner);
  const admissions: number[] = [];
  const completions: number[] = [];
  let maxRunning = 0;
  let maxWaiting = 0;
  limiter.on("admitted", () => admissions.push(performance.now()));
  const consumer = runConsumer<TestBody>({
    limiter,
    source,
    concurrency: 300,
    handler: async () => {
      await sleep(handlerMs);
      completions.push(performance.now());
    },
  });
  const sampler = setInterval(() => {
    const s = consumer.stats();
    maxRunning = Math.max(maxRunning, s.running);
    maxWaiting = Math.max(maxWaiting, s.waiting);
  }, 50);
  const started = performance.now();
  // Steady state begins once the first admitted messages complete.
  await sleep(handlerMs + 500 + measureMs);
  clearInterval(sampler);
  const from = started + handlerMs + 500;
  const done = completions.filter((t) => t >= from && t < from + measureMs).length;
  const rate = done / (measureMs / 1000);
  await consumer.stop();
  await dispose();
  await limiter.close();
  await queue.drop();
  const audit = auditSlidingWindows(admissions.map((t) => ({ t, units: 1 })), LIMIT, 1000);
  console.log(
    `${handlerMs} ms handlers: ${rate.toFixed(1)} completions/s over ${measureMs} ms of steady state (quota ${LIMIT}/s); ` +
      `at most ${maxRunning} running and ${maxWaiting} waiting; ${source.receiveTimes.length} receives; worst 1 s window of admissions ${audit.worstRatio.toFixed(2)} of the quota`,
  );
  expect(audit.overLimitWindows).toBe(0);
  expect(rate).toBeGreaterThanOrEqual(LIMIT * 0.9);
  // The window held about one pullAheadMs (1 s) of admissions, not the running handlers.
  expect(maxWaiting).toBeLessThanOrEqual(LIMIT + 1);
}, 30_000);

test("the pull window follows the effective pace: a rate factor scales it, a Retry-After pause empties it (no receives while paused)", async () => {
  const queue = await harness.newQueue();
  const { limiter } = await readyMemoryLimiter({ resource: `throughput-${shortId()}`, limit: LIMIT, intervalMs: 1000, partitions: 5 });
  await queue.send(range(400));
  const { source: inner, dispose } = await openSource<TestBody>(queue.spec("c1"));
  const source = countingSource(inner);
  const consumer = runConsumer<TestBody>({ limiter, source, concurrency: 300, handler: () => sleep(200) });
  await sleep(500);
  const full = consumer.stats().window;
  limiter.setRateFactor(0.5);
  const half = consumer.stats().window;
  limiter.pauseFor(2000);
  const paused = consumer.stats().window;
  // A receive already on its way may finish; none may start once the pause is seen.
  await sleep(200);
  const before = source.receiveTimes.length;
  await sleep(1500);
  const duringPause = source.receiveTimes.length - before;
  await sleep(800);
  const after = consumer.stats().window;
  await consumer.stop();
  await dispose();
  await limiter.close();
  await queue.drop();
  console.log(`window: ${full} at full pace, ${half} at rate factor 0.5, ${paused} while paused (${duringPause} receives in 1.5 s of the pause), ${after} after it`);
  expect(full).toBe(LIMIT);
  expect(half).toBe(LIMIT / 2);
  expect(paused).toBe(0);
  expect(duringPause).toBe(0);
  expect(after).toBe(LIMIT / 2);
});
