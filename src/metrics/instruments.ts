import { ConfigError } from "../errors/config-error.js";
import type { AdmittedEvent, BackendCallEvent, BackendOperation } from "../limiter/events.js";
import type { LimiterStats, PartitionedRateLimiter } from "../limiter/partitioned-rate-limiter.js";

// The one list of what a limiter's metrics measure. The prom-client collectors
// (limiter-metrics.ts) and the OpenTelemetry instruments (otel-metrics.ts) are both built from it,
// so the two exporters always show the same instruments with the same meaning.

/** A numeric field of {@link LimiterStats}. */
export type NumericStat = { [K in keyof LimiterStats]: LimiterStats[K] extends number ? K : never }[keyof LimiterStats];

/** GaugeInstrument is a value read from `stats()` at collection time. */
export interface GaugeInstrument {
  /** Name after the prefix, the same for Prometheus and OpenTelemetry, e.g. `"held_partitions"`. */
  readonly name: string;
  /** The OpenTelemetry unit (UCUM; `{...}` is an annotation Prometheus drops). */
  readonly unit: string;
  readonly description: string;
  readonly value: (stats: LimiterStats) => number;
}

/**
 * CounterInstrument is a monotonic total kept by the limiter and read from `stats()` at collection
 * time. Prometheus appends `_total` to the name; OpenTelemetry names carry no suffix (its
 * Prometheus exporter adds `_total` itself).
 */
export interface CounterInstrument {
  /** Name after the prefix, without `_total`, e.g. `"admissions"`. */
  readonly name: string;
  readonly unit: string;
  readonly description: string;
  readonly stat: NumericStat;
}

/** HistogramInstrument is a distribution recorded from limiter events, in seconds. */
export interface HistogramInstrument {
  /** Name after the prefix, e.g. `"wait_seconds"`. */
  readonly name: string;
  readonly unit: "s";
  readonly description: string;
  /** Label / attribute names besides `resource`. */
  readonly attributes: readonly string[];
  /** Bucket upper bounds in seconds, unless the caller passes its own. */
  readonly defaultBuckets: readonly number[];
}

/** The gauges: held partitions, capacity, queue length and units, rate factor, pause, wants, fair share. */
export const LIMITER_GAUGES: readonly GaugeInstrument[] = [
  { name: "held_partitions", unit: "{partition}", description: "Partitions this limiter holds and may use now.", value: (s) => s.heldPartitions },
  { name: "capacity_units", unit: "{unit}", description: "Units per interval held now (held partitions x limit / partitions).", value: (s) => s.capacity },
  { name: "queue_length", unit: "{waiter}", description: "Waiters queued in acquire().", value: (s) => s.queueLength },
  { name: "queued_units", unit: "{unit}", description: "Units queued in acquire().", value: (s) => s.queuedUnits },
  { name: "rate_factor", unit: "{factor}", description: "The adaptive pace factor (1 = full pace).", value: (s) => s.rateFactor },
  { name: "paused_seconds", unit: "s", description: "Seconds left of a Retry-After pause, 0 if none.", value: (s) => s.pausedForMs / 1000 },
  { name: "wanted_partitions", unit: "{partition}", description: "Partitions this limiter wants, as it publishes them to the other holders.", value: (s) => s.wants },
  { name: "fair_share_partitions", unit: "{partition}", description: "Its fair share of partitions, computed from every holder's published record.", value: (s) => s.fairShare },
];

/** The counters, each one of the limiter's own totals in `stats()`. */
export const LIMITER_COUNTERS: readonly CounterInstrument[] = [
  { name: "admissions", unit: "{admission}", description: "Admissions (acquire, tryAcquire, schedule).", stat: "admitted" },
  { name: "admitted_units", unit: "{unit}", description: "Units admitted.", stat: "admittedUnits" },
  { name: "waited", unit: "{admission}", description: "Admissions that waited in the queue.", stat: "waited" },
  { name: "denied", unit: "{call}", description: "tryAcquire calls refused.", stat: "denied" },
  { name: "rejected", unit: "{waiter}", description: "Waiters refused because the queue was full.", stat: "rejected" },
  { name: "dropped", unit: "{waiter}", description: "Waiters dropped from a full queue (drop-oldest).", stat: "dropped" },
  { name: "timed_out", unit: "{waiter}", description: "Waiters that timed out.", stat: "timedOut" },
  { name: "aborted", unit: "{waiter}", description: "Waiters that were aborted.", stat: "aborted" },
  { name: "lease_acquired", unit: "{lease}", description: "Leases acquired.", stat: "leasesAcquired" },
  { name: "lease_renewed", unit: "{lease}", description: "Leases renewed.", stat: "leasesRenewed" },
  { name: "lease_released", unit: "{lease}", description: "Leases released.", stat: "leasesReleased" },
  { name: "lease_lost", unit: "{lease}", description: "Leases lost (renewal refused or local deadline passed).", stat: "leasesLost" },
  { name: "acquire_misses", unit: "{call}", description: "Lease acquire attempts that found every candidate partition taken (contention).", stat: "acquireMisses" },
  { name: "backend_errors", unit: "{call}", description: "Backend calls that failed.", stat: "backendErrors" },
  { name: "throttles", unit: "{throttle}", description: "Throttles reported by the service (reportThrottle).", stat: "throttles" },
];

/** The wait from `acquire()` to admission (the `"admitted"` event). */
export const WAIT_HISTOGRAM: HistogramInstrument = {
  name: "wait_seconds",
  unit: "s",
  description: "Seconds from acquire() to admission (0 when admitted without queueing).",
  attributes: [],
  defaultBuckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
};

/** Backend call latency by operation and outcome (the `"backend-call"` event). */
export const BACKEND_CALL_HISTOGRAM: HistogramInstrument = {
  name: "backend_call_seconds",
  unit: "s",
  description: "Seconds per backend call, by operation and outcome (ok or error).",
  attributes: ["operation", "outcome"],
  defaultBuckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
};


/** The options both exporters take beside their own: a name prefix and the histograms' buckets. */
export interface InstrumentOptions {
  /** Prefix of every metric name; each exporter has its own default. */
  prefix?: string;
  /**
   * Buckets of the wait-time histogram, in seconds, in increasing order (for OpenTelemetry, advice
   * that views may override). Default {@link WAIT_HISTOGRAM}'s.
   */
  waitBuckets?: readonly number[];
  /** Buckets of the backend-latency histogram, likewise. Default {@link BACKEND_CALL_HISTOGRAM}'s. */
  backendBuckets?: readonly number[];
}

/** {@link InstrumentOptions} checked, with defaults filled in. */
export interface ResolvedInstrumentOptions {
  readonly prefix: string;
  readonly waitBuckets: number[];
  readonly backendBuckets: number[];
}

/**
 * Checks the arguments of a register function (`where` names it in errors): a limiter, an
 * options object, a string prefix, and buckets in increasing order (prom-client would accept
 * unordered buckets and count wrongly).
 */
export function resolveInstrumentOptions(where: string, limiter: unknown, options: unknown, defaultPrefix: string): ResolvedInstrumentOptions {
  if (typeof (limiter as PartitionedRateLimiter | undefined)?.stats !== "function") throw new ConfigError(`${where}(limiter)`, limiter, "a PartitionedRateLimiter");
  if (typeof options !== "object" || options === null) throw new ConfigError(`${where}(options)`, options, "an options object");
  const o = options as InstrumentOptions;
  const prefix = o.prefix ?? defaultPrefix;
  if (typeof prefix !== "string") throw new ConfigError(`${where}(options.prefix)`, prefix, "a string");
  const buckets = (option: "waitBuckets" | "backendBuckets", value: unknown): number[] => {
    const ok = Array.isArray(value) && value.every((b, i) => typeof b === "number" && Number.isFinite(b) && (i === 0 || b > (value[i - 1] as number)));
    if (!ok) throw new ConfigError(`${where}(options.${option})`, value, "an array of finite numbers in increasing order (seconds)");
    return [...(value as number[])];
  };
  return {
    prefix,
    waitBuckets: buckets("waitBuckets", o.waitBuckets ?? WAIT_HISTOGRAM.defaultBuckets),
    backendBuckets: buckets("backendBuckets", o.backendBuckets ?? BACKEND_CALL_HISTOGRAM.defaultBuckets),
  };
}

/** Where an exporter's two histograms take their observations, in seconds. */
export interface HistogramRecorders {
  /** One admission's wait from `acquire()` ({@link WAIT_HISTOGRAM}). */
  wait(seconds: number): void;
  /** One backend call's duration, with its `operation` and `outcome` ({@link BACKEND_CALL_HISTOGRAM}). */
  backendCall(seconds: number, attributes: { readonly operation: BackendOperation; readonly outcome: "ok" | "error" }): void;
}

/**
 * Feeds the histograms from the limiter's `"admitted"` and `"backend-call"` events. Returns the
 * function that detaches the listeners and then runs `dispose` (once, however often it is called).
 */
export function recordHistograms(limiter: PartitionedRateLimiter, record: HistogramRecorders, dispose: () => void): () => void {
  const onAdmitted = (event: AdmittedEvent) => record.wait(event.waitedMs / 1000);
  const onBackendCall = (event: BackendCallEvent) =>
    record.backendCall(event.durationMs / 1000, { operation: event.operation, outcome: event.ok ? "ok" : "error" });
  limiter.on("admitted", onAdmitted);
  limiter.on("backend-call", onBackendCall);
  let registered = true;
  return () => {
    if (!registered) return;
    registered = false;
    limiter.off("admitted", onAdmitted);
    limiter.off("backend-call", onBackendCall);
    dispose();
  };
}
