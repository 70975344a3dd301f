import type { BatchObservableCallback, Meter, Observable } from "@opentelemetry/api";
import { ConfigError } from "../errors/config-error.js";
import type { PartitionedRateLimiter } from "../limiter/partitioned-rate-limiter.js";
import { BACKEND_CALL_HISTOGRAM, LIMITER_COUNTERS, LIMITER_GAUGES, WAIT_HISTOGRAM, recordHistograms, resolveInstrumentOptions, type InstrumentOptions } from "./instruments.js";

/** LimiterOtelMetricsOptions are the options of {@link registerLimiterOtelMetrics}. */
export interface LimiterOtelMetricsOptions extends InstrumentOptions {
  /**
   * The meter to create the instruments on, e.g. `metrics.getMeter("partitioned-rate-limiter")`
   * from `@opentelemetry/api`. Passed in, so this package never imports OpenTelemetry itself (an
   * optional peer dependency) and never the SDK: which provider, reader and exporter collect the
   * instruments is the application's choice.
   */
  meter: Meter;
  /** Prefix of every instrument name. Default `"partitioned_rate_limiter."`. */
  prefix?: string;
}

/**
 * registerLimiterOtelMetrics creates a limiter's OpenTelemetry instruments on `meter`: the same
 * instruments as the prom-client metrics (`registerLimiterMetrics`), from the one shared list,
 * with every data point carrying the attribute `resource`:
 * - observable gauges (held partitions, capacity, queue length and units, rate factor, pause) and
 *   observable counters (admissions, units, waited, denied, rejected, dropped, timed out,
 *   aborted, leases acquired/renewed/released/lost, backend errors, throttles), all read from one
 *   `stats()` call per collection. Counters report the limiter's cumulative totals; names carry
 *   no `_total` (OpenTelemetry's Prometheus exporter adds it).
 * - histograms `wait_seconds` (from the `"admitted"` event) and `backend_call_seconds` with
 *   attributes `operation` and `outcome` (`ok` or `error`, from the `"backend-call"` event).
 *
 * Nothing here starts a timer: collection is driven by the application's metric reader, so
 * registering metrics never keeps a process alive. Several limiters may share one meter as long
 * as their resources differ (their data points differ by `resource`).
 *
 * Returns a function that removes the observation callback and detaches the listeners; the
 * OpenTelemetry API cannot delete instruments, so they stay on the meter without new data.
 */
export function registerLimiterOtelMetrics(limiter: PartitionedRateLimiter, options: LimiterOtelMetricsOptions): () => void {
  const { prefix, waitBuckets, backendBuckets } = resolveInstrumentOptions("registerLimiterOtelMetrics", limiter, options, "partitioned_rate_limiter.");
  const { meter } = options;
  const methods = ["createObservableGauge", "createObservableCounter", "createHistogram", "addBatchObservableCallback", "removeBatchObservableCallback"] as const;
  if (typeof meter !== "object" || meter === null || methods.some((m) => typeof meter[m] !== "function")) {
    throw new ConfigError("registerLimiterOtelMetrics(options.meter)", meter, `an OpenTelemetry Meter (metrics.getMeter(name) from "@opentelemetry/api")`);
  }
  const attributes = { resource: limiter.resource };

  const gauges = LIMITER_GAUGES.map((g) => ({ value: g.value, observable: meter.createObservableGauge(prefix + g.name, { description: g.description, unit: g.unit }) }));
  const counters = LIMITER_COUNTERS.map((c) => ({ stat: c.stat, observable: meter.createObservableCounter(prefix + c.name, { description: c.description, unit: c.unit }) }));
  // One callback for all: every value of a collection comes from the same stats() snapshot.
  const observe: BatchObservableCallback = (result) => {
    const stats = limiter.stats();
    for (const g of gauges) result.observe(g.observable, g.value(stats), attributes);
    for (const c of counters) result.observe(c.observable, stats[c.stat], attributes);
  };
  const observables: Observable[] = [...gauges.map((g) => g.observable), ...counters.map((c) => c.observable)];
  meter.addBatchObservableCallback(observe, observables);

  const wait = meter.createHistogram(prefix + WAIT_HISTOGRAM.name, {
    description: WAIT_HISTOGRAM.description, unit: WAIT_HISTOGRAM.unit, advice: { explicitBucketBoundaries: waitBuckets },
  });
  const backend = meter.createHistogram(prefix + BACKEND_CALL_HISTOGRAM.name, {
    description: BACKEND_CALL_HISTOGRAM.description, unit: BACKEND_CALL_HISTOGRAM.unit, advice: { explicitBucketBoundaries: backendBuckets },
  });
  return recordHistograms(
    limiter,
    {
      wait: (seconds) => wait.record(seconds, attributes),
      backendCall: (seconds, labels) => backend.record(seconds, { ...attributes, ...labels }),
    },
    () => meter.removeBatchObservableCallback(observe, observables),
  );
}
