import { performance } from "node:perf_hooks";
import { createRetryingFetch } from "../../src/flow/retrying-fetch.js";
import { TimeoutError } from "../../src/errors/timeout-error.js";
import { readyMemoryLimiter } from "../support/flow-limiter.js";
import { startHttpServer, type TestHttpServer } from "../support/http-server.js";

// Issue #18, reproduction 6, against a real HTTP server: one `Retry-After: 3600` must not pause
// the whole limiter for an hour, and `Retry-After: 0` must not retry in a burst. About 3 s.

let server: TestHttpServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

test("Retry-After: 3600 on a call with a 2 s budget: the 429 at once, the limiter paused 2 s at most, another caller admitted after it", async () => {
  const { limiter } = await readyMemoryLimiter({ resource: "retry-bounds-1", limit: 100, intervalMs: 1000, partitions: 4 });
  let calls = 0;
  server = await startHttpServer((_req, res) => {
    calls++;
    res.writeHead(429, { "Retry-After": "3600" }).end();
  });
  const fetchRetrying = createRetryingFetch({ limiter, maxElapsedMs: 2000 });
  const started = performance.now();
  const response = await fetchRetrying(server.url);
  const returnedAfter = performance.now() - started;
  const paused = limiter.stats().pausedForMs;
  // An unrelated caller that waits up to 3 s.
  const other = await limiter.acquire(1, { timeoutMs: 3000 }).then(() => performance.now() - started, (e: unknown) => e);
  console.log(`#6 Retry-After 3600, budget 2 s: ${response.status} after ${calls} call(s) in ${returnedAfter.toFixed(0)} ms; limiter paused ${paused.toFixed(0)} ms; another caller ${typeof other === "number" ? `admitted after ${other.toFixed(0)} ms` : `failed: ${String(other)}`}`);
  await limiter.close();
  expect(response.status).toBe(429);
  expect(calls).toBe(1);
  expect(paused).toBeLessThanOrEqual(2000);
  expect(TimeoutError.is(other)).toBe(false);
  expect(other as number).toBeLessThan(2500);
});

test("Retry-After: 0 is retried with the normal backoff, not 5 times in a few ms", async () => {
  const { limiter } = await readyMemoryLimiter({ resource: "retry-bounds-2", limit: 100, intervalMs: 1000, partitions: 4 });
  const arrivals: number[] = [];
  server = await startHttpServer((_req, res) => {
    arrivals.push(performance.now());
    res.writeHead(429, { "Retry-After": "0" }).end();
  });
  const response = await createRetryingFetch({ limiter, maxAttempts: 5, baseDelayMs: 100, random: () => 0.5 })(server.url);
  const gaps = arrivals.slice(1).map((t, i) => t - arrivals[i]!);
  console.log(`#6 Retry-After 0: ${arrivals.length} attempts over ${(arrivals[arrivals.length - 1]! - arrivals[0]!).toFixed(0)} ms, gaps ${gaps.map((g) => g.toFixed(0)).join(", ")} ms`);
  await limiter.close();
  expect(response.status).toBe(429);
  expect(arrivals).toHaveLength(5);
  // Backoff at random 0.5: 50, 100, 200, 400 ms (plus the request's own time).
  [50, 100, 200, 400].forEach((min, i) => expect(gaps[i]!).toBeGreaterThanOrEqual(min - 2));
});
