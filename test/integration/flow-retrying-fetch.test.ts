import { performance } from "node:perf_hooks";
import { createRetryingFetch } from "../../src/flow/retrying-fetch.js";
import { retryWithLimiter } from "../../src/flow/retry-with-limiter.js";
import type { PartitionedRateLimiter } from "../../src/limiter/partitioned-rate-limiter.js";
import { readyMemoryLimiter } from "../support/flow-limiter.js";
import { startHttpServer, type TestHttpServer } from "../support/http-server.js";
import { freePort } from "../support/net.js";

// Real time, one memory-backed limiter (100/s) and a real HTTP server per test. About 4 s in all.
let limiter: PartitionedRateLimiter;
let server: TestHttpServer | undefined;

beforeAll(async () => {
  ({ limiter } = await readyMemoryLimiter({ resource: "retrying-fetch", limit: 100, intervalMs: 1000, partitions: 4 }));
});
afterAll(() => limiter.close());
afterEach(async () => {
  await server?.close();
  server = undefined;
});

/** A server answering with `answers` in turn (the last one repeats), recording arrival times. */
async function scripted(answers: Array<(arrivalWallMs: number) => { status: number; headers?: Record<string, string> }>) {
  const arrivals: number[] = [];
  const wall: number[] = [];
  server = await startHttpServer((_req, res) => {
    arrivals.push(performance.now());
    wall.push(Date.now());
    const answer = answers[Math.min(arrivals.length, answers.length) - 1]!(Date.now());
    res.writeHead(answer.status, answer.headers ?? {});
    res.end(String(answer.status));
  });
  return { arrivals, wall, url: server.url };
}

test("429 with Retry-After: 1 is not called again within that second; then it succeeds", async () => {
  const { arrivals, url } = await scripted([() => ({ status: 429, headers: { "Retry-After": "1" } }), () => ({ status: 200 })]);
  const throttlesBefore = limiter.stats().throttles;
  const fetchRetrying = createRetryingFetch({ limiter, maxAttempts: 3 });
  const response = await fetchRetrying(`${url}/x`);
  expect(response.status).toBe(200);
  expect(await response.text()).toBe("200");
  expect(arrivals).toHaveLength(2);
  expect(arrivals[1]! - arrivals[0]!).toBeGreaterThanOrEqual(1000);
  expect(arrivals[1]! - arrivals[0]!).toBeLessThan(1800);
  expect(limiter.stats().throttles - throttlesBefore).toBe(1);
});

test("503 with an HTTP-date is not called again before that date", async () => {
  let retryAt = 0;
  const { wall, url } = await scripted([
    (now) => {
      // HTTP-dates have whole seconds: the next whole second at least 1 s ahead.
      retryAt = Math.ceil((now + 1000) / 1000) * 1000;
      return { status: 503, headers: { "Retry-After": new Date(retryAt).toUTCString() } };
    },
    () => ({ status: 200 }),
  ]);
  const response = await createRetryingFetch({ limiter })(url, { method: "POST", body: "payload" });
  expect(response.status).toBe(200);
  expect(wall).toHaveLength(2);
  expect(wall[1]!).toBeGreaterThanOrEqual(retryAt);
  expect(wall[1]! - retryAt).toBeLessThan(800);
});

test("without Retry-After: full-jitter backoff within its bounds, bounded attempts, last response returned", async () => {
  const { arrivals, url } = await scripted([() => ({ status: 429 })]);
  const delays: number[] = [];
  const throttlesBefore = limiter.stats().throttles;
  const fetchRetrying = createRetryingFetch({
    limiter, maxAttempts: 5, baseDelayMs: 40, maxDelayMs: 100, onRetry: (info) => delays.push(info.delayMs),
  });
  const response = await fetchRetrying(url);
  expect(response.status).toBe(429);
  expect(arrivals).toHaveLength(5);
  expect(delays).toHaveLength(4);
  delays.forEach((d, i) => {
    expect(d).toBeGreaterThanOrEqual(0);
    expect(d).toBeLessThan(Math.min(100, 40 * 2 ** i));
    expect(arrivals[i + 1]! - arrivals[i]!).toBeGreaterThanOrEqual(d);
  });
  expect(limiter.stats().throttles - throttlesBefore).toBe(5);
});

test("maxElapsedMs bounds the total time: a wait that would overrun it is not started", async () => {
  const { arrivals, url } = await scripted([() => ({ status: 503, headers: { "Retry-After": "5" } })]);
  // Its own limiter: the 5 s Retry-After pauses the limiter it is reported to.
  const own = (await readyMemoryLimiter({ resource: "retrying-fetch-elapsed", limit: 10, intervalMs: 1000, partitions: 1 })).limiter;
  const start = performance.now();
  const response = await createRetryingFetch({ limiter: own, maxAttempts: 10, maxElapsedMs: 2000 })(url);
  expect(response.status).toBe(503);
  expect(own.stats()).toMatchObject({ throttles: 1, admitted: 1 });
  await own.close();
  expect(arrivals).toHaveLength(1);
  expect(performance.now() - start).toBeLessThan(500);
});

test("an abort ends a Retry-After wait at once with the signal's reason", async () => {
  const { arrivals, url } = await scripted([() => ({ status: 429, headers: { "Retry-After": "30" } })]);
  const controller = new AbortController();
  const reason = new Error("user gave up");
  // Its own limiter: the 30 s Retry-After pauses the limiter it is reported to.
  const own = (await readyMemoryLimiter({ resource: "retrying-fetch-abort", limit: 10, intervalMs: 1000, partitions: 1 })).limiter;
  const pending = createRetryingFetch({ limiter: own })(url, { signal: controller.signal });
  while (arrivals.length === 0) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, 50));
  const abortedAt = performance.now();
  controller.abort(reason);
  await expect(pending).rejects.toBe(reason);
  expect(performance.now() - abortedAt).toBeLessThan(50);
  expect(arrivals).toHaveLength(1);
  expect(own.stats().pausedForMs).toBeGreaterThan(29_000);
  await own.close();
});

test("non-retryable statuses and network errors pass straight through after one attempt", async () => {
  const { arrivals, url } = await scripted([() => ({ status: 500 })]);
  const fetchRetrying = createRetryingFetch({ limiter, maxAttempts: 5 });
  expect((await fetchRetrying(url)).status).toBe(500);
  expect(arrivals).toHaveLength(1);
  const port = await freePort(); // nobody listens there
  await expect(fetchRetrying(`http://127.0.0.1:${port}/`)).rejects.toThrow("fetch failed"); // undici's TypeError (from another realm under jest)
});

test("retryWithLimiter retries a thrown throttle error after its retryAfterMs, each attempt admitted", async () => {
  const calls: number[] = [];
  const admittedBefore = limiter.stats().admitted;
  const result = await retryWithLimiter(limiter, async (attempt) => {
    calls.push(performance.now());
    if (attempt < 3) throw Object.assign(new Error("busy"), { status: 429, retryAfterMs: 150 });
    return "done";
  });
  expect(result).toBe("done");
  expect(calls).toHaveLength(3);
  expect(calls[1]! - calls[0]!).toBeGreaterThanOrEqual(150);
  expect(calls[2]! - calls[1]!).toBeGreaterThanOrEqual(150);
  expect(limiter.stats().admitted - admittedBefore).toBe(3);
  const plain = new Error("not a throttle");
  await expect(retryWithLimiter(limiter, async () => { throw plain; })).rejects.toBe(plain);
});
