import type { IncomingMessage, ServerResponse } from "node:http";
import { performance } from "node:perf_hooks";
import express from "express";
import { loadShedding, type ShedInfo } from "../../src/flow/load-shedding.js";
import { auditSlidingWindows } from "../support/audit.js";
import { readyMemoryLimiter } from "../support/flow-limiter.js";
import { startHttpServer } from "../support/http-server.js";

async function burst(url: string, n: number): Promise<Array<{ status: number; retryAfter: string | null }>> {
  return Promise.all(Array.from({ length: n }, async () => {
    const response = await fetch(url);
    await response.arrayBuffer();
    return { status: response.status, retryAfter: response.headers.get("retry-after") };
  }));
}

// About 3 s: a burst of 10x the quota at a node:http server, then at an Express app.
test("node:http: a 10x burst gets 503s with a Retry-After from the backlog; admitted requests stay within the quota", async () => {
  const limit = 20;
  const { limiter } = await readyMemoryLimiter({ resource: "shed-http", limit, intervalMs: 1000, partitions: 2 });
  const arrivals: number[] = [];
  const shed: ShedInfo[] = [];
  const shedder = loadShedding({ limiter, maxWaitMs: 300, onShed: (_req, info) => shed.push(info) });
  const server = await startHttpServer(shedder((_req: IncomingMessage, res: ServerResponse) => {
    arrivals.push(performance.now());
    res.end("ok");
  }));
  try {
    const start = performance.now();
    const results = await burst(server.url, 10 * limit);
    const elapsed = performance.now() - start;
    const ok = results.filter((r) => r.status === 200);
    const rejected = results.filter((r) => r.status === 503);
    const retryAfters = rejected.map((r) => Number(r.retryAfter));
    console.log(`shedding: ${ok.length} admitted, ${rejected.length} shed in ${Math.round(elapsed)} ms; Retry-After ${Math.min(...retryAfters)}-${Math.max(...retryAfters)} s; reasons ${[...new Set(shed.map((s) => s.reason))].join(",")}`);
    expect(ok.length + rejected.length).toBe(10 * limit);
    expect(ok.length).toBeGreaterThan(0);
    expect(rejected.length).toBeGreaterThan(ok.length);
    expect(arrivals).toHaveLength(ok.length);
    expect(auditSlidingWindows(arrivals.map((t) => ({ t, units: 1 })), limit, 1000).overLimitWindows).toBe(0);
    // Whole seconds, at least 1, spread so the shed clients' retries fit the held pace: at most
    // `limit` of them (plus the queue of one maxWaitMs) are told to come back within each second.
    for (const s of retryAfters) {
      expect(Number.isInteger(s)).toBe(true);
      expect(s).toBeGreaterThanOrEqual(1);
      expect(s).toBeLessThanOrEqual(Math.ceil((10 * limit) / limit) + 1);
    }
    const maxRetryAfter = Math.max(...retryAfters);
    expect(maxRetryAfter).toBeGreaterThanOrEqual(8);
    for (let v = 1; v <= maxRetryAfter; v++) expect(retryAfters.filter((s) => s <= v).length).toBeLessThanOrEqual(limit * v + limit);
    expect(elapsed).toBeLessThan(1500); // shed, not queued for ever
    expect(limiter.stats().queueLength).toBe(0);
  } finally {
    await server.close();
    await limiter.close();
  }
});

test("Express middleware: admitted requests reach the route, the rest get 503 + Retry-After", async () => {
  const limit = 10;
  const { limiter } = await readyMemoryLimiter({ resource: "shed-express", limit, intervalMs: 1000, partitions: 1 });
  const arrivals: number[] = [];
  const app = express();
  app.use(loadShedding({ limiter, maxWaitMs: 200 }));
  app.get("/", (_req, res) => {
    arrivals.push(performance.now());
    res.send("ok");
  });
  const server = await startHttpServer(app);
  try {
    const results = await burst(server.url, 10 * limit);
    const ok = results.filter((r) => r.status === 200).length;
    const rejected = results.filter((r) => r.status === 503);
    expect(ok + rejected.length).toBe(10 * limit);
    expect(ok).toBe(arrivals.length);
    expect(ok).toBeGreaterThan(0);
    expect(rejected.every((r) => Number(r.retryAfter) >= 1)).toBe(true);
    expect(auditSlidingWindows(arrivals.map((t) => ({ t, units: 1 })), limit, 1000).overLimitWindows).toBe(0);
  } finally {
    await server.close();
    await limiter.close();
  }
});
