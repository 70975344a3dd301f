import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import * as promClient from "prom-client";
import { registerLimiterMetrics } from "../../src/metrics/limiter-metrics.js";
import { MemoryLeaseBackend } from "../../src/lease-backends/memory.js";
import { PartitionedRateLimiter } from "../../src/limiter/partitioned-rate-limiter.js";

type Json = Awaited<ReturnType<promClient.Registry["getMetricsAsJSON"]>>;
const P = "partitioned_rate_limiter_";

function value(json: Json, name: string, labels: Record<string, string> = {}): number {
  const metric = json.find((m) => m.name === P + name);
  if (!metric) throw new Error(`no metric ${P + name}`);
  const values = (metric as { values: Array<{ value: number; labels: Record<string, string | number>; metricName?: string }> }).values;
  const { metricName, ...wanted } = labels;
  const match = values.filter((v) => Object.entries(wanted).every(([k, l]) => String(v.labels[k]) === l) && (metricName === undefined || v.metricName === metricName));
  return match.reduce((a, v) => a + v.value, 0);
}

// About 2 s of real time on a memory backend.
test("a scrape shows every metric with the limiter's values; unregister removes them", async () => {
  const backend = new MemoryLeaseBackend();
  const callsBefore = { ...backend.calls };
  const limiter = new PartitionedRateLimiter({ resource: "metrics", limit: 20, intervalMs: 1000, partitions: 2, backend, leaseTtlMs: 600, minPartitions: 2, maxQueued: 3 });
  const registry = new promClient.Registry();
  const unregister = registerLimiterMetrics(limiter, { registry, promClient });
  while (limiter.capacity < 20) await new Promise((r) => setTimeout(r, 10));

  // Activity: a burst that waits, a denial, a queue overflow, a timeout, an abort, throttles.
  let immediate = 0;
  while (limiter.tryAcquire(1)) immediate++; // the slice is used up: one denial
  expect(immediate).toBeGreaterThan(0);
  const waits = Array.from({ length: 3 }, () => limiter.acquire(1));
  await expect(limiter.acquire(1)).rejects.toThrow(/queue/i); // maxQueued 3
  await Promise.all(waits);
  limiter.pauseFor(300); // nothing is admitted meanwhile: the next waiters stay queued
  const controller = new AbortController();
  const aborted = limiter.acquire(2, { signal: controller.signal });
  const timedOut = limiter.acquire(2, { timeoutMs: 10 });
  controller.abort(new Error("stop"));
  await expect(aborted).rejects.toThrow("stop");
  await expect(timedOut).rejects.toThrow(/timed out/);
  limiter.reportThrottle();
  limiter.reportThrottle({ retryAfterMs: 100 });
  limiter.setRateFactor(0.5);
  await new Promise((r) => setTimeout(r, 700)); // leases renew (ttl 600 → every 200 ms)

  const text = await registry.metrics();
  const json = await registry.getMetricsAsJSON();
  const s = limiter.stats();
  const r = { resource: "metrics" };
  expect(s.admitted).toBeGreaterThan(0);
  expect(s.waited).toBeGreaterThan(0);
  expect(s.leasesRenewed).toBeGreaterThan(0);
  expect([s.denied, s.rejected, s.timedOut, s.aborted, s.throttles]).toEqual([1, 1, 1, 1, 2]);
  expect(s.admitted).toBe(immediate + 3);
  expect(value(json, "held_partitions", r)).toBe(s.heldPartitions);
  expect(value(json, "capacity_units", r)).toBe(s.capacity);
  expect(value(json, "queue_length", r)).toBe(s.queueLength);
  expect(value(json, "queued_units", r)).toBe(s.queuedUnits);
  expect(value(json, "rate_factor", r)).toBe(0.5);
  expect(value(json, "paused_seconds", r)).toBe(0);
  expect(value(json, "wanted_partitions", r)).toBe(s.wants);
  expect(value(json, "fair_share_partitions", r)).toBe(s.fairShare);
  expect(s.wants).toBeGreaterThan(0);
  expect(s.fairShare).toBeGreaterThan(0);
  const counters: Array<[string, number]> = [
    ["admissions_total", s.admitted], ["admitted_units_total", s.admittedUnits], ["waited_total", s.waited], ["denied_total", s.denied],
    ["rejected_total", s.rejected], ["dropped_total", s.dropped], ["timed_out_total", s.timedOut], ["aborted_total", s.aborted],
    ["lease_acquired_total", s.leasesAcquired], ["lease_renewed_total", s.leasesRenewed], ["lease_released_total", s.leasesReleased],
    ["lease_lost_total", s.leasesLost], ["acquire_misses_total", s.acquireMisses], ["backend_errors_total", s.backendErrors], ["throttles_total", s.throttles],
  ];
  for (const [name, expected] of counters) expect([name, value(json, name, r)]).toEqual([name, expected]);
  // Wait histogram: one observation per admission; the ones admitted without queueing observed 0.
  expect(value(json, "wait_seconds", { ...r, metricName: `${P}wait_seconds_count` })).toBe(s.admitted);
  expect(value(json, "wait_seconds", { ...r, metricName: `${P}wait_seconds_bucket`, le: "0.001" })).toBeGreaterThanOrEqual(s.admitted - s.waited);
  expect(value(json, "wait_seconds", { ...r, metricName: `${P}wait_seconds_sum` })).toBeGreaterThan(0);
  // Backend latency: one observation per backend call the limiter made, by operation.
  for (const op of ["tryAcquire", "heartbeat"] as const) {
    const calls = backend.calls[op] - callsBefore[op];
    expect([op, value(json, "backend_call_seconds", { ...r, operation: op, outcome: "ok", metricName: `${P}backend_call_seconds_count` })]).toEqual([op, calls]);
  }
  expect(text).toContain(`${P}admitted_units_total{resource="metrics"} ${s.admittedUnits}`);
  expect(text).toContain(`# TYPE ${P}wait_seconds histogram`);

  // A second scrape adds only what happened since.
  limiter.reportThrottle();
  expect(value(await registry.getMetricsAsJSON(), "throttles_total", r)).toBe(3);

  unregister();
  unregister();
  expect(await registry.getMetricsAsJSON()).toEqual([]);
  expect(limiter.listenerCount("admitted") + limiter.listenerCount("backend-call")).toBe(0);
  // Registering twice on one registry fails whole, leaving nothing half-registered.
  registerLimiterMetrics(limiter, { registry, promClient, prefix: "a_" });
  expect(() => registerLimiterMetrics(limiter, { registry, promClient, prefix: "a_" })).toThrow(/already been registered/);
  expect((await registry.getMetricsAsJSON()).length).toBe(25); // 8 gauges, 15 counters, 2 histograms
  await limiter.close();
});

test("the main entry never loads prom-client: src imports it as a type only", () => {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (path.endsWith(".ts")) files.push(path);
    }
  };
  walk(join(__dirname, "..", "..", "src"));
  const offenders = files.filter((f) => /^\s*(import|export)(?!\s+type\b)[^;]*["']prom-client["']/m.test(readFileSync(f, "utf8")) || /(require|import)\(\s*["']prom-client["']\s*\)/.test(readFileSync(f, "utf8")));
  expect(offenders).toEqual([]);
  expect(files.some((f) => readFileSync(f, "utf8").includes(`import type * as PromClient from "prom-client"`))).toBe(true);
});
