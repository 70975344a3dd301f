import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import { ConfigError } from "../errors/config-error.js";
import type { LeaseBackend } from "../contract/lease-backend.js";
import { systemClock, type Clock } from "../contract/clock.js";
import { partitionPools, validatePlan, type Plan } from "../contract/plan.js";
import { capacityToMicro } from "../contract/units.js";
import { finiteNumber, holderIdValue, optionalNumber, optionalSignal, resourceName } from "../contract/validate.js";

/** What a full wait queue does with one more waiter. */
export type QueuePolicy = "reject" | "drop-oldest";

/** Options of {@link PartitionedRateLimiter}. Times are in milliseconds. */
export interface PartitionedRateLimiterOptions {
  /** The quota's name; every process sharing it uses the same one. 1-128 chars of `A-Z a-z 0-9 . _ -`. */
  resource: string;
  /** Units allowed in any window of `intervalMs` across all processes. */
  limit: number;
  /** The quota's window. */
  intervalMs: number;
  /** How many equal partitions the quota is split into (1-10,000). */
  partitions: number;
  /** Where leases come from. */
  backend: LeaseBackend;
  /** Lease lifetime on the backend unless renewed. Default 15,000. Renewed about every third of it. */
  leaseTtlMs?: number;
  /** Pacing granularity k: per partition at most c/k units per `(intervalMs + jitterMs) / k`. Default 10. */
  slicesPerInterval?: number;
  /** Partitions kept even while idle (reserved capacity). Default 0. */
  minPartitions?: number;
  /** Most partitions held at once. Default: all this limiter may hold (shared plus its pool's). */
  maxPartitions?: number;
  /** The pool this limiter belongs to: it may hold that pool's partitions and shared ones. */
  pool?: string;
  /** Partitions reserved per pool in the plan, e.g. `{ ingest: 4 }`. Part of the plan: the same in every process. */
  pools?: Readonly<Record<string, number>>;
  /** This instance's identity in the backend. Default `hostname-pid-random`. */
  holderId?: string;
  /** Most waiters queued in `acquire()`. Default Infinity. */
  maxQueued?: number;
  /** With a full queue: `"reject"` the newcomer (default) or `"drop-oldest"` lowest-priority waiter. */
  queuePolicy?: QueuePolicy;
  /**
   * How long before the backend can free a lease this limiter stops using it. Default and minimum:
   * `(intervalMs + jitterMs) / slicesPerInterval × (1 + driftFactor) + driftFactor × leaseTtlMs + 5`,
   * rounded up.
   */
  safetyMarginMs?: number;
  /**
   * Worst relative clock-rate difference between this process, the backend and the service
   * (0.001 = 1 ms per second). Widens both the safety margin and the pacing slices. Default 0.001:
   * quartz clocks drift 1e-5 to 1e-4.
   */
  driftFactor?: number;
  /** Spread of request delays to the service that the pace absorbs. Default 5. */
  jitterMs?: number;
  /** The monotonic clock. Default {@link systemClock}. */
  clock?: Clock;
  /** Closes the limiter when aborted. */
  signal?: AbortSignal;
}

/** Options after validation and defaults, with derived quantities. */
export interface ResolvedOptions {
  readonly resource: string;
  readonly plan: Plan;
  readonly backend: LeaseBackend;
  readonly leaseTtlMs: number;
  readonly slicesPerInterval: number;
  readonly minPartitions: number;
  readonly maxPartitions: number;
  readonly pool: string | null;
  readonly holderId: string;
  readonly maxQueued: number;
  readonly queuePolicy: QueuePolicy;
  readonly safetyMarginMs: number;
  readonly driftFactor: number;
  readonly jitterMs: number;
  readonly clock: Clock;
  readonly signal: AbortSignal | undefined;
  /** Units per interval of one partition. */
  readonly partitionCapacity: number;
  /** Micro-units one partition admits per slice. */
  readonly sliceMicro: number;
  /** The slice window in ms. */
  readonly sliceMs: number;
  /** Partitions this limiter may take: its pool's first, then shared. */
  readonly ownPoolPartitions: readonly number[];
  readonly sharedPartitions: readonly number[];
  /** Timeout of each backend call. */
  readonly backendTimeoutMs: number;
  /** Renew a lease this long after its last renewal was sent. */
  readonly renewEveryMs: number;
}

const KNOWN_OPTIONS = new Set([
  "resource", "limit", "intervalMs", "partitions", "backend", "leaseTtlMs", "slicesPerInterval",
  "minPartitions", "maxPartitions", "pool", "pools", "holderId", "maxQueued", "queuePolicy",
  "safetyMarginMs", "driftFactor", "jitterMs", "clock", "signal",
]);

/** The smallest safe margin for the given timing (DESIGN.md section 3, rule 3). */
export function minimumSafetyMarginMs(intervalMs: number, jitterMs: number, slices: number, driftFactor: number, ttlMs: number): number {
  return Math.ceil(sliceLengthMs(intervalMs, jitterMs, slices, driftFactor) + driftFactor * ttlMs + 5);
}

/** One pacing slice: `(intervalMs + jitterMs) / slices`, stretched by the clock drift allowed. */
export function sliceLengthMs(intervalMs: number, jitterMs: number, slices: number, driftFactor: number): number {
  return ((intervalMs + jitterMs) / slices) * (1 + driftFactor);
}

/** Validates options, naming the option, the value and what is allowed in every error. */
export function resolveOptions(input: PartitionedRateLimiterOptions): ResolvedOptions {
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    throw new ConfigError("options", input, "an options object");
  }
  for (const key of Object.keys(input)) {
    if (!KNOWN_OPTIONS.has(key)) throw new ConfigError("options", key, `one of ${[...KNOWN_OPTIONS].join(", ")}`, `unknown option "${key}"`);
  }
  const o = input as unknown as Record<string, unknown>;
  const resource = resourceName("resource", o.resource);
  const plan = validatePlan({
    limit: o.limit as number,
    intervalMs: o.intervalMs as number,
    partitions: o.partitions as number,
    pools: (o.pools ?? {}) as Record<string, number>,
  });
  const backend = o.backend as LeaseBackend;
  if (
    typeof backend !== "object" || backend === null ||
    !["ensurePlan", "readPlan", "tryAcquire", "renew", "release", "inspect", "close"].every(
      (m) => typeof (backend as unknown as Record<string, unknown>)[m] === "function",
    )
  ) {
    throw new ConfigError("backend", backend, "a LeaseBackend (e.g. new MemoryLeaseBackend())");
  }
  const leaseTtlMs = optionalNumber("leaseTtlMs", o.leaseTtlMs, 15_000, { min: 100, max: 3_600_000, integer: true });
  const slicesPerInterval = optionalNumber("slicesPerInterval", o.slicesPerInterval, 10, { min: 1, max: 1000, integer: true });
  const driftFactor = optionalNumber("driftFactor", o.driftFactor, 0.001, { min: 0, max: 0.1 });
  const jitterMs = optionalNumber("jitterMs", o.jitterMs, 5, { min: 0, max: plan.intervalMs });
  const minimumMargin = minimumSafetyMarginMs(plan.intervalMs, jitterMs, slicesPerInterval, driftFactor, leaseTtlMs);
  const safetyMarginMs = optionalNumber("safetyMarginMs", o.safetyMarginMs, minimumMargin, {
    min: minimumMargin,
  });
  if (safetyMarginMs * 2 > leaseTtlMs) {
    throw new ConfigError(
      "leaseTtlMs",
      leaseTtlMs,
      `at least 2 × safetyMarginMs = ${safetyMarginMs * 2}`,
      `a lease must stay usable for more than one renewal period after its margin; the margin is at least (intervalMs + jitterMs) / slicesPerInterval × (1 + driftFactor) + driftFactor × leaseTtlMs + 5 = ${minimumMargin}`,
    );
  }
  let pool: string | null = null;
  if (o.pool !== undefined) {
    if (typeof o.pool !== "string" || !(o.pool in plan.pools)) {
      throw new ConfigError("pool", o.pool, `one of the pools in the plan (${Object.keys(plan.pools).join(", ") || "none defined: set pools"})`);
    }
    pool = o.pool;
  }
  const owners = partitionPools(plan);
  const ownPoolPartitions: number[] = [];
  const sharedPartitions: number[] = [];
  owners.forEach((owner, i) => {
    if (owner === null) sharedPartitions.push(i);
    else if (owner === pool) ownPoolPartitions.push(i);
  });
  const holdable = ownPoolPartitions.length + sharedPartitions.length;
  if (holdable === 0) {
    throw new ConfigError("pool", o.pool, "a pool, since every partition is reserved to a pool", "this limiter could hold nothing");
  }
  const maxPartitions = optionalNumber("maxPartitions", o.maxPartitions, holdable, { min: 1, max: holdable, integer: true });
  const minPartitions = optionalNumber("minPartitions", o.minPartitions, 0, { min: 0, max: maxPartitions, integer: true });
  const holderId = o.holderId === undefined
    ? `${hostname().replace(/[^\x21-\x7e]/g, "_").slice(0, 100)}-${process.pid}-${randomBytes(4).toString("hex")}`
    : holderIdValue("holderId", o.holderId);
  const maxQueued = o.maxQueued === undefined || o.maxQueued === Infinity
    ? Infinity
    : finiteNumber("maxQueued", o.maxQueued, { min: 0, integer: true });
  const queuePolicy = o.queuePolicy ?? "reject";
  if (queuePolicy !== "reject" && queuePolicy !== "drop-oldest") {
    throw new ConfigError("queuePolicy", queuePolicy, `"reject" or "drop-oldest"`);
  }
  const clock = (o.clock ?? systemClock) as Clock;
  if (typeof clock !== "object" || clock === null || typeof clock.now !== "function" || typeof clock.setTimeout !== "function" || typeof clock.clearTimeout !== "function") {
    throw new ConfigError("clock", o.clock, "a Clock with now(), setTimeout() and clearTimeout()");
  }
  const signal = optionalSignal("signal", o.signal);
  const partitionCapacity = plan.limit / plan.partitions;
  const sliceMicro = capacityToMicro(partitionCapacity / slicesPerInterval);
  if (sliceMicro < 1) {
    throw new ConfigError("slicesPerInterval", slicesPerInterval, `at most limit / partitions × 1e6 = ${Math.floor(partitionCapacity * 1e6)}`, "each slice of a partition must hold at least one millionth of a unit");
  }
  const renewEveryMs = Math.floor(leaseTtlMs / 3);
  const backendTimeoutMs = Math.max(50, Math.min(5_000, Math.floor((leaseTtlMs - safetyMarginMs - renewEveryMs) / 2)));
  return {
    resource, plan, backend, leaseTtlMs, slicesPerInterval, minPartitions, maxPartitions, pool, holderId,
    maxQueued, queuePolicy, safetyMarginMs, driftFactor, jitterMs, clock, signal, partitionCapacity,
    sliceMicro, sliceMs: sliceLengthMs(plan.intervalMs, jitterMs, slicesPerInterval, driftFactor), ownPoolPartitions, sharedPartitions,
    backendTimeoutMs, renewEveryMs,
  };
}
