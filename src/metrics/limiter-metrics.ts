import type * as PromClient from "prom-client";
import { ConfigError } from "../errors/config-error.js";
import type { AdmittedEvent, BackendCallEvent } from "../limiter/events.js";
import type { LimiterStats, PartitionedRateLimiter } from "../limiter/partitioned-rate-limiter.js";

/** The parts of the prom-client module that {@link registerLimiterMetrics} uses. */
export type PromClientModule = Pick<typeof PromClient, "Gauge" | "Counter" | "Histogram">;

/** LimiterMetricsOptions are the options of {@link registerLimiterMetrics}. */
export interface LimiterMetricsOptions {
  /** The registry to register into (e.g. `promClient.register`). */
  registry: PromClient.Registry;
  /**
   * The prom-client module (`import * as promClient from "prom-client"`). Passed in, so this
   * package never imports prom-client itself: it stays an optional peer dependency.
   */
  promClient: PromClientModule;
  /** Prefix of every metric name. Default `"partitioned_rate_limiter_"`. */
  prefix?: string;
  /** Buckets of the wait-time histogram, in seconds. */
  waitBuckets?: readonly number[];
  /** Buckets of the backend-latency histogram, in seconds. */
  backendBuckets?: readonly number[];
}

type NumericStat = { [K in keyof LimiterStats]: LimiterStats[K] extends number ? K : never }[keyof LimiterStats];

const GAUGES: ReadonlyArray<[name: string, help: string, value: (s: LimiterStats) => number]> = [
  ["held_partitions", "Partitions this limiter holds and may use now.", (s) => s.heldPartitions],
  ["capacity_units", "Units per interval held now (held partitions x limit / partitions).", (s) => s.capacity],
  ["queue_length", "Waiters queued in acquire().", (s) => s.queueLength],
  ["queued_units", "Units queued in acquire().", (s) => s.queuedUnits],
  ["rate_factor", "The adaptive pace factor (1 = full pace).", (s) => s.rateFactor],
  ["paused_seconds", "Seconds left of a Retry-After pause, 0 if none.", (s) => s.pausedForMs / 1000],
];

const COUNTERS: ReadonlyArray<[name: string, help: string, stat: NumericStat]> = [
  ["admissions_total", "Admissions (acquire, tryAcquire, schedule).", "admitted"],
  ["admitted_units_total", "Units admitted.", "admittedUnits"],
  ["waited_total", "Admissions that waited in the queue.", "waited"],
  ["denied_total", "tryAcquire calls refused.", "denied"],
  ["rejected_total", "Waiters refused because the queue was full.", "rejected"],
  ["dropped_total", "Waiters dropped from a full queue (drop-oldest).", "dropped"],
  ["timed_out_total", "Waiters that timed out.", "timedOut"],
  ["aborted_total", "Waiters that were aborted.", "aborted"],
  ["lease_acquired_total", "Leases acquired.", "leasesAcquired"],
  ["lease_renewed_total", "Leases renewed.", "leasesRenewed"],
  ["lease_released_total", "Leases released.", "leasesReleased"],
  ["lease_lost_total", "Leases lost (renewal refused or local deadline passed).", "leasesLost"],
  ["backend_errors_total", "Backend calls that failed.", "backendErrors"],
  ["throttles_total", "Throttles reported by the service (reportThrottle).", "throttles"],
];

const DEFAULT_WAIT_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const DEFAULT_BACKEND_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/**
 * registerLimiterMetrics registers a limiter's Prometheus metrics in `registry`, all labelled
 * `resource`: gauges (held partitions, capacity, queue length and units, rate factor, pause),
 * counters read from `stats()` at scrape time (admissions and units, waited, denied, rejected,
 * dropped, timed out, aborted, leases acquired/renewed/released/lost, backend errors, throttles),
 * and histograms of the wait from `acquire()` to admission (the `"admitted"` event) and of
 * backend call latency by operation and outcome (the `"backend-call"` event). Returns a function
 * that removes them all and detaches the listeners. Metric names are fixed per prefix, so
 * register one limiter per registry and prefix (prom-client rejects a duplicate name).
 */
export function registerLimiterMetrics(limiter: PartitionedRateLimiter, options: LimiterMetricsOptions): () => void {
  if (typeof limiter?.stats !== "function") throw new ConfigError("registerLimiterMetrics(limiter)", limiter, "a PartitionedRateLimiter");
  if (typeof options !== "object" || options === null) throw new ConfigError("registerLimiterMetrics(options)", options, "an options object");
  const { registry, promClient } = options;
  if (typeof registry?.registerMetric !== "function") throw new ConfigError("registerLimiterMetrics(options.registry)", registry, "a prom-client Registry");
  if (typeof promClient?.Gauge !== "function" || typeof promClient.Counter !== "function" || typeof promClient.Histogram !== "function") {
    throw new ConfigError("registerLimiterMetrics(options.promClient)", promClient, `the prom-client module (import * as promClient from "prom-client")`);
  }
  const prefix = options.prefix ?? "partitioned_rate_limiter_";
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

  for (const [name, help, value] of GAUGES) {
    register(name, (n) => new promClient.Gauge({
      name: n, help, labelNames: ["resource"], registers,
      collect() {
        this.set(labels, value(limiter.stats()));
      },
    }));
  }
  for (const [name, help, stat] of COUNTERS) {
    // A counter only goes up: each scrape adds what the limiter's own counter gained since the last.
    let last = 0;
    register(name, (n) => new promClient.Counter({
      name: n, help, labelNames: ["resource"], registers,
      collect() {
        const now = limiter.stats()[stat];
        if (now > last) this.inc(labels, now - last);
        last = now;
      },
    }));
  }
  const wait = register("wait_seconds", (n) => new promClient.Histogram({
    name: n, help: "Seconds from acquire() to admission (0 when admitted without queueing).",
    labelNames: ["resource"], buckets: [...(options.waitBuckets ?? DEFAULT_WAIT_BUCKETS)], registers,
  }));
  const backend = register("backend_call_seconds", (n) => new promClient.Histogram({
    name: n, help: "Seconds per backend call, by operation and outcome (ok or error).",
    labelNames: ["resource", "operation", "outcome"], buckets: [...(options.backendBuckets ?? DEFAULT_BACKEND_BUCKETS)], registers,
  }));

  const onAdmitted = (event: AdmittedEvent) => wait.observe(labels, event.waitedMs / 1000);
  const onBackendCall = (event: BackendCallEvent) =>
    backend.observe({ ...labels, operation: event.operation, outcome: event.ok ? "ok" : "error" }, event.durationMs / 1000);
  limiter.on("admitted", onAdmitted);
  limiter.on("backend-call", onBackendCall);

  let registered = true;
  return () => {
    if (!registered) return;
    registered = false;
    limiter.off("admitted", onAdmitted);
    limiter.off("backend-call", onBackendCall);
    for (const n of names) registry.removeSingleMetric(n);
  };
}
