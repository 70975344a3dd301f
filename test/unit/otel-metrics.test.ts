import { DataPointType, MeterProvider, MetricReader, type HistogramMetricData, type MetricData } from "@opentelemetry/sdk-metrics";
import * as promClient from "prom-client";
import { MemoryLeaseBackend } from "../../src/lease-backends/memory.js";
import { PartitionedRateLimiter } from "../../src/limiter/partitioned-rate-limiter.js";
import { VirtualClock } from "../../src/testing/virtual-clock.js";
import { BACKEND_CALL_HISTOGRAM, LIMITER_COUNTERS, LIMITER_GAUGES, WAIT_HISTOGRAM } from "../../src/metrics/instruments.js";
import { registerLimiterMetrics } from "../../src/metrics/limiter-metrics.js";
import { registerLimiterOtelMetrics } from "../../src/metrics/otel-metrics.js";

// The OpenTelemetry instruments against a real limiter on virtual time, collected with the SDK's
// MetricReader on demand (no export timer): every value is compared with stats() at the same
// virtual instant, and with what prom-client shows for the same instrument.

/** A reader that collects only when the test asks. */
class ManualReader extends MetricReader {
  protected async onForceFlush(): Promise<void> {}
  protected async onShutdown(): Promise<void> {}
}

const P = "partitioned_rate_limiter.";
const PROM = "partitioned_rate_limiter_";

async function collect(reader: ManualReader): Promise<Map<string, MetricData>> {
  const { resourceMetrics, errors } = await reader.collect();
  expect(errors).toEqual([]);
  const out = new Map<string, MetricData>();
  for (const scope of resourceMetrics.scopeMetrics) for (const metric of scope.metrics) out.set(metric.descriptor.name, metric);
  return out;
}

/** The single data point of a gauge or counter, checked to carry exactly `{ resource }`. */
function scalar(metrics: Map<string, MetricData>, name: string, resource: string): number {
  const metric = metrics.get(P + name);
  if (!metric) throw new Error(`no instrument ${P + name}`);
  expect([name, metric.dataPoints.length]).toEqual([name, 1]);
  const point = metric.dataPoints[0]!;
  expect(point.attributes).toEqual({ resource });
  return point.value as number;
}

function histogram(metrics: Map<string, MetricData>, name: string): HistogramMetricData {
  const metric = metrics.get(P + name);
  if (!metric || metric.dataPointType !== DataPointType.HISTOGRAM) throw new Error(`no histogram ${P + name}`);
  return metric;
}

async function promValue(registry: promClient.Registry, name: string, labels: Record<string, string>, metricName?: string): Promise<number> {
  const json = await registry.getMetricsAsJSON();
  const metric = json.find((m) => m.name === PROM + name);
  if (!metric) throw new Error(`no prom metric ${PROM + name}`);
  const values = (metric as { values: Array<{ value: number; labels: Record<string, string | number>; metricName?: string }> }).values;
  return values
    .filter((v) => Object.entries(labels).every(([k, l]) => String(v.labels[k]) === l) && (metricName === undefined || v.metricName === metricName))
    .reduce((a, v) => a + v.value, 0);
}

test("every instrument equals stats() on virtual time, and prom-client shows the same values", async () => {
  const clock = new VirtualClock(0);
  const backend = new MemoryLeaseBackend({ clock });
  // Backend calls take 4 ms there and 1 ms back on the virtual clock: the latency histogram has a known sum.
  backend.setLatency(4, 1);
  const limiter = new PartitionedRateLimiter({
    resource: "otel", limit: 20, intervalMs: 1000, partitions: 2, backend, clock, leaseTtlMs: 600, minPartitions: 2, maxQueued: 3,
  });
  const reader = new ManualReader();
  const provider = new MeterProvider({ readers: [reader] });
  const dispose = registerLimiterOtelMetrics(limiter, { meter: provider.getMeter("test") });
  const registry = new promClient.Registry();
  registerLimiterMetrics(limiter, { registry, promClient });
  const waits: number[] = [];
  const calls: Array<{ operation: string; ok: boolean; durationMs: number }> = [];
  limiter.on("admitted", (e) => waits.push(e.waitedMs));
  limiter.on("backend-call", (e) => calls.push(e));

  await clock.advance(100);
  expect(limiter.capacity).toBe(20);
  // Activity: a burst that waits, a denial, a queue overflow, a timeout, an abort, throttles, a pause.
  let immediate = 0;
  while (limiter.tryAcquire(1)) immediate++;
  const queued = Array.from({ length: 3 }, () => limiter.acquire(1));
  await expect(limiter.acquire(1)).rejects.toThrow(/queue/i);
  await clock.advance(300); // one slice (2 units) per ~100 ms
  await Promise.all(queued);
  limiter.pauseFor(300);
  const controller = new AbortController();
  const aborted = limiter.acquire(2, { signal: controller.signal });
  // The pause makes the wait longer than the timeout: it fails at once.
  await expect(limiter.acquire(2, { timeoutMs: 10 })).rejects.toThrow(/timed out/);
  controller.abort(new Error("stop"));
  await expect(aborted).rejects.toThrow("stop");
  limiter.reportThrottle();
  limiter.setRateFactor(0.5);
  // Renewals fail for longer than the lease lives: backend errors, then leases lost at the local deadline.
  backend.failNext("heartbeat", 6);
  await clock.advance(900);
  // A pause still running and a waiter left in the queue, so those gauges are not zero.
  limiter.reportThrottle({ retryAfterMs: 500 });
  const pending = limiter.acquire(2);

  const s = limiter.stats();
  expect([s.denied, s.rejected, s.timedOut, s.aborted, s.throttles]).toEqual([1, 1, 1, 1, 2]);
  expect(s.admitted).toBe(immediate + 3);
  for (const field of ["waited", "leasesAcquired", "leasesRenewed", "leasesLost", "backendErrors", "queueLength", "queuedUnits", "pausedForMs"] as const) {
    expect([field, s[field] > 0]).toEqual([field, true]);
  }
  // Written out here rather than taken from the shared list, so a wrong entry in the list fails.
  const gauges: Record<string, number> = {
    held_partitions: s.heldPartitions, capacity_units: s.capacity, queue_length: s.queueLength, queued_units: s.queuedUnits,
    rate_factor: s.rateFactor, paused_seconds: s.pausedForMs / 1000, wanted_partitions: s.wants, fair_share_partitions: s.fairShare,
  };
  const counters: Record<string, number> = {
    admissions: s.admitted, admitted_units: s.admittedUnits, waited: s.waited, denied: s.denied, rejected: s.rejected, dropped: s.dropped,
    timed_out: s.timedOut, aborted: s.aborted, lease_acquired: s.leasesAcquired, lease_renewed: s.leasesRenewed,
    lease_released: s.leasesReleased, lease_lost: s.leasesLost, acquire_misses: s.acquireMisses, backend_errors: s.backendErrors, throttles: s.throttles,
  };
  expect(LIMITER_GAUGES.map((g) => g.name)).toEqual(Object.keys(gauges));
  expect(LIMITER_COUNTERS.map((c) => c.name)).toEqual(Object.keys(counters));
  expect(s.rateFactor).toBe(0.5);
  const metrics = await collect(reader);
  for (const g of LIMITER_GAUGES) {
    expect([g.name, scalar(metrics, g.name, "otel")]).toEqual([g.name, gauges[g.name]]);
    expect(metrics.get(P + g.name)!.dataPointType).toBe(DataPointType.GAUGE);
    expect(metrics.get(P + g.name)!.descriptor).toMatchObject({ description: g.description, unit: g.unit });
    expect([g.name, await promValue(registry, g.name, { resource: "otel" })]).toEqual([g.name, gauges[g.name]]);
  }
  for (const c of LIMITER_COUNTERS) {
    expect([c.name, scalar(metrics, c.name, "otel")]).toEqual([c.name, counters[c.name]]);
    const metric = metrics.get(P + c.name)!;
    expect(metric.dataPointType === DataPointType.SUM && metric.isMonotonic).toBe(true);
    expect([c.name, await promValue(registry, `${c.name}_total`, { resource: "otel" })]).toEqual([c.name, counters[c.name]]);
  }
  // Wait histogram: one observation per admission, summing the events' waits (virtual ms → s).
  const wait = histogram(metrics, WAIT_HISTOGRAM.name);
  expect(wait.descriptor.unit).toBe("s");
  expect(wait.dataPoints).toHaveLength(1);
  const w = wait.dataPoints[0]!;
  expect(w.attributes).toEqual({ resource: "otel" });
  expect(w.value.count).toBe(s.admitted);
  expect(w.value.count).toBe(waits.length);
  expect(w.value.sum).toBeCloseTo(waits.reduce((a, b) => a + b, 0) / 1000, 9);
  expect(w.value.sum).toBeGreaterThan(0);
  expect(w.value.buckets.boundaries).toEqual(WAIT_HISTOGRAM.defaultBuckets);
  expect(w.value.count).toBe(await promValue(registry, WAIT_HISTOGRAM.name, { resource: "otel" }, `${PROM}wait_seconds_count`));
  // Backend latency: one observation per backend call, by operation and outcome, in virtual seconds.
  const latency = histogram(metrics, BACKEND_CALL_HISTOGRAM.name);
  const seen = new Map(latency.dataPoints.map((p) => [`${String(p.attributes.operation)}/${String(p.attributes.outcome)}`, p]));
  const expected = new Map<string, { count: number; ms: number }>();
  for (const c of calls) {
    const key = `${c.operation}/${c.ok ? "ok" : "error"}`;
    const e = expected.get(key) ?? { count: 0, ms: 0 };
    expected.set(key, { count: e.count + 1, ms: e.ms + c.durationMs });
  }
  expect(expected.get("heartbeat/error")?.count).toBe(6);
  expect([...seen.keys()].sort()).toEqual([...expected.keys()].sort());
  for (const [key, { count, ms }] of expected) {
    const point = seen.get(key)!;
    expect([key, point.value.count]).toEqual([key, count]);
    expect(point.value.sum).toBeCloseTo(ms / 1000, 9);
    expect(point.value.sum).toBeGreaterThan(0);
    expect(point.attributes.resource).toBe("otel");
    const [operation, outcome] = key.split("/") as [string, string];
    expect([key, await promValue(registry, BACKEND_CALL_HISTOGRAM.name, { resource: "otel", operation, outcome }, `${PROM}backend_call_seconds_count`)]).toEqual([key, count]);
  }
  expect(calls.filter((c) => c.operation === "heartbeat").length + calls.filter((c) => c.operation === "tryAcquire").length).toBe(backend.calls.heartbeat + backend.calls.tryAcquire);

  // After close: the released leases show in the next collection.
  const closing = limiter.close();
  await expect(pending).rejects.toThrow(/closed/i);
  await clock.advance(1000);
  await closing;
  const after = limiter.stats();
  expect(after.leasesReleased).toBeGreaterThan(0);
  const again = await collect(reader);
  for (const c of LIMITER_COUNTERS) expect([c.name, scalar(again, c.name, "otel")]).toEqual([c.name, after[c.stat]]);

  // Disposed: no more observations, no listeners left, and no timer was ever put on the clock.
  dispose();
  dispose();
  // What is left are the test's own listeners and prom-client's.
  expect([limiter.listenerCount("admitted"), limiter.listenerCount("backend-call")]).toEqual([2, 2]);
  // Cumulative storage keeps the last observation; it just is not observed any more.
  limiter.reportThrottle();
  expect(limiter.stats().throttles).toBe(after.throttles + 1);
  expect(scalar(await collect(reader), "throttles", "otel")).toBe(after.throttles);
  expect(clock.pendingTimers).toBe(0);
  await provider.shutdown();
});

test("several limiters share one meter, told apart by resource; a custom prefix and buckets apply", async () => {
  const clock = new VirtualClock(0);
  const backend = new MemoryLeaseBackend({ clock });
  const reader = new ManualReader();
  const provider = new MeterProvider({ readers: [reader] });
  const meter = provider.getMeter("shared");
  const limiters: PartitionedRateLimiter[] = [];
  for (const [resource, partitions] of [["a", 1], ["b", 3]] as const) {
    const limiter = new PartitionedRateLimiter({ resource, limit: 30, intervalMs: 1000, partitions, backend, clock, leaseTtlMs: 3000, minPartitions: partitions });
    registerLimiterOtelMetrics(limiter, { meter, prefix: "prl_", waitBuckets: [0.5, 1] });
    limiters.push(limiter);
  }
  await clock.advance(100);
  limiters[1]!.tryAcquire(3);
  const { resourceMetrics } = await reader.collect();
  const metrics = resourceMetrics.scopeMetrics.flatMap((s) => s.metrics);
  const held = metrics.find((m) => m.descriptor.name === "prl_held_partitions")!;
  expect(held.dataPoints.map((p) => [p.attributes.resource, p.value]).sort()).toEqual([["a", 1], ["b", 3]]);
  const units = metrics.find((m) => m.descriptor.name === "prl_admitted_units")!;
  expect(units.dataPoints.map((p) => [p.attributes.resource, p.value]).sort()).toEqual([["a", 0], ["b", 3]]);
  const wait = metrics.find((m) => m.descriptor.name === "prl_wait_seconds") as HistogramMetricData;
  expect(wait.dataPoints.map((p) => [p.attributes.resource, p.value.count, p.value.buckets.boundaries])).toEqual([["b", 1, [0.5, 1]]]);
  for (const limiter of limiters) {
    const closing = limiter.close();
    await clock.advance(1000);
    await closing;
  }
  await provider.shutdown();
});

test("bad options name the option and what is allowed", () => {
  const clock = new VirtualClock(0);
  const limiter = new PartitionedRateLimiter({ resource: "bad", limit: 10, intervalMs: 1000, partitions: 1, backend: new MemoryLeaseBackend({ clock }), clock, leaseTtlMs: 3000 });
  const meter = new MeterProvider().getMeter("bad");
  expect(() => registerLimiterOtelMetrics({} as PartitionedRateLimiter, { meter })).toThrow(/registerLimiterOtelMetrics\(limiter\).*PartitionedRateLimiter/);
  expect(() => registerLimiterOtelMetrics(limiter, { meter: {} as never })).toThrow(/options\.meter.*OpenTelemetry Meter/);
  expect(() => registerLimiterOtelMetrics(limiter, { meter, waitBuckets: [1, 0.5] })).toThrow(/options\.waitBuckets.*increasing/);
  expect(() => registerLimiterOtelMetrics(limiter, { meter, prefix: 3 as never })).toThrow(/options\.prefix/);
  // prom-client takes the same options through the same checks (it would count unordered buckets wrongly).
  const registry = new promClient.Registry();
  expect(() => registerLimiterMetrics({} as PartitionedRateLimiter, { registry, promClient })).toThrow(/registerLimiterMetrics\(limiter\).*PartitionedRateLimiter/);
  expect(() => registerLimiterMetrics(limiter, { registry, promClient, backendBuckets: [0.1, 0.1] })).toThrow(/registerLimiterMetrics\(options\.backendBuckets\).*increasing/);
  expect(() => registerLimiterMetrics(limiter, { registry, promClient, prefix: 3 as never })).toThrow(/registerLimiterMetrics\(options\.prefix\).*a string/);
  expect(registry.getMetricsAsArray()).toEqual([]);
  void limiter.close();
});
