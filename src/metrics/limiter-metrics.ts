import type * as PromClient from "prom-client";
import { ConfigError } from "../errors/config-error.js";
import type { PartitionedRateLimiter } from "../limiter/partitioned-rate-limiter.js";
import { BACKEND_CALL_HISTOGRAM, LIMITER_COUNTERS, LIMITER_GAUGES, WAIT_HISTOGRAM, recordHistograms, resolveInstrumentOptions, type InstrumentOptions } from "./instruments.js";

/** The parts of the prom-client module that {@link registerLimiterMetrics} uses. */
export type PromClientModule = Pick<typeof PromClient, "Gauge" | "Counter" | "Histogram">;

/** LimiterMetricsOptions are the options of {@link registerLimiterMetrics}. */
export interface LimiterMetricsOptions extends InstrumentOptions {
  /** The registry to register into (e.g. `promClient.register`). */
  registry: PromClient.Registry;
  /**
   * The prom-client module (`import * as promClient from "prom-client"`). Passed in, so this
   * package never imports prom-client itself: it stays an optional peer dependency.
   */
  promClient: PromClientModule;
  /** Prefix of every metric name. Default `"partitioned_rate_limiter_"`. */
  prefix?: string;
}

/**
 * registerLimiterMetrics registers a limiter's Prometheus metrics in `registry`, all labelled
 * `resource`: gauges (held partitions, capacity, queue length and units, rate factor, pause),
 * counters read from `stats()` at scrape time (admissions and units, waited, denied, rejected,
 * dropped, timed out, aborted, leases acquired/renewed/released/lost, backend errors, throttles),
 * and histograms of the wait from `acquire()` to admission (the `"admitted"` event) and of
 * backend call latency by operation and outcome (the `"backend-call"` event) — the instruments of
 * `LIMITER_GAUGES`, `LIMITER_COUNTERS` and the two histograms, which the OpenTelemetry instruments
 * (`registerLimiterOtelMetrics`) share. Counters get a `_total` suffix. Returns a function
 * that removes them all and detaches the listeners. Metric names are fixed per prefix, so
 * register one limiter per registry and prefix (prom-client rejects a duplicate name).
 */
export function registerLimiterMetrics(limiter: PartitionedRateLimiter, options: LimiterMetricsOptions): () => void {
  const { prefix, waitBuckets, backendBuckets } = resolveInstrumentOptions("registerLimiterMetrics", limiter, options, "partitioned_rate_limiter_");
  const { registry, promClient } = options;
  if (typeof registry?.registerMetric !== "function") throw new ConfigError("registerLimiterMetrics(options.registry)", registry, "a prom-client Registry");
  if (typeof promClient?.Gauge !== "function" || typeof promClient.Counter !== "function" || typeof promClient.Histogram !== "function") {
    throw new ConfigError("registerLimiterMetrics(options.promClient)", promClient, `the prom-client module (import * as promClient from "prom-client")`);
  }
  const labels = { resource: limiter.resource };
  const registers = [registry];
  const names: string[] = [];
  const register = <M>(name: string, make: (name: string) => M): M => {
    // Registration is all or nothing: a name clash removes what this call already added.
    try {
      const metric = make(prefix + name);
      names.push(prefix + name);
      return metric;
    } catch (error) {
      for (const n of names) registry.removeSingleMetric(n);
      throw error;
    }
  };

  for (const { name, description: help, value } of LIMITER_GAUGES) {
    register(name, (n) => new promClient.Gauge({
      name: n, help, labelNames: ["resource"], registers,
      collect() {
        this.set(labels, value(limiter.stats()));
      },
    }));
  }
  for (const { name, description: help, stat } of LIMITER_COUNTERS) {
    // A counter only goes up: each scrape adds what the limiter's own counter gained since the last.
    let last = 0;
    register(`${name}_total`, (n) => new promClient.Counter({
      name: n, help, labelNames: ["resource"], registers,
      collect() {
        const now = limiter.stats()[stat];
        if (now > last) this.inc(labels, now - last);
        last = now;
      },
    }));
  }
  const wait = register(WAIT_HISTOGRAM.name, (n) => new promClient.Histogram({
    name: n, help: WAIT_HISTOGRAM.description,
    labelNames: ["resource", ...WAIT_HISTOGRAM.attributes], buckets: waitBuckets, registers,
  }));
  const backend = register(BACKEND_CALL_HISTOGRAM.name, (n) => new promClient.Histogram({
    name: n, help: BACKEND_CALL_HISTOGRAM.description,
    labelNames: ["resource", ...BACKEND_CALL_HISTOGRAM.attributes], buckets: backendBuckets, registers,
  }));

  return recordHistograms(
    limiter,
    {
      wait: (seconds) => wait.observe(labels, seconds),
      backendCall: (seconds, attributes) => backend.observe({ ...labels, ...attributes }, seconds),
    },
    () => {
      for (const n of names) registry.removeSingleMetric(n);
    },
  );
}
