import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { createRetryingFetch, MemoryLeaseBackend, PartitionedRateLimiter, retryWithLimiter } from "partitioned-rate-limiter";

// Any backend works; the in-memory one keeps the example in one process and grants at once.
const limiter = new PartitionedRateLimiter({
  resource: "orders-api", limit: 100, intervalMs: 1000, partitions: 5, backend: new MemoryLeaseBackend(), leaseTtlMs: 2000,
});

// Stands in for the throttled API: it answers the first request 429 with Retry-After: 1.
let requests = 0;
const api = createServer((_req, res) => {
  if (++requests === 1) res.writeHead(429, { "retry-after": "1" }).end();
  else res.writeHead(201).end();
}).listen(0, "127.0.0.1");
await new Promise((resolve) => api.once("listening", resolve));
const url = `http://127.0.0.1:${(api.address() as AddressInfo).port}/orders`;

const fetchApi = createRetryingFetch({ limiter, maxAttempts: 5, maxElapsedMs: 30_000, baseDelayMs: 100, maxDelayMs: 5_000 });
const body = JSON.stringify({ id: 1 });
const res = await fetchApi(url, { method: "POST", body, signal: AbortSignal.timeout(10_000) });
console.log(`POST ${res.status} after ${requests} requests`);

// Any async call: errors with status 429/503 (and an optional retryAfterMs) are retried.
let calls = 0;
const insert = async (record: { id: number }) => {
  if (++calls === 1) throw Object.assign(new Error("throttled"), { status: 429, retryAfterMs: 200 });
  return { ...record, stored: true };
};
const row = await retryWithLimiter(limiter, () => insert({ id: 2 }), { cost: 10 });
console.log(`stored ${JSON.stringify(row)} after ${calls} calls`);

await limiter.close();
api.close();
