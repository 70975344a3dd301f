import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import { ConfigError } from "../errors/config-error.js";
import { systemClock, type Clock } from "../contract/clock.js";
import type { LeaseBackend } from "../contract/lease-backend.js";
import { validatePlan, type Plan } from "../contract/plan.js";
import { finiteNumber, holderIdValue, optionalNumber, optionalSignal, resourceName } from "../contract/validate.js";
import { resolvePlanConfig, type PlanConfig, type ProcessSettings } from "./plan-config.js";

/** What a full wait queue does with one more waiter. */
export type QueuePolicy = "reject" | "drop-oldest";

/** Options of {@link PartitionedRateLimiter}. Times are in milliseconds. */
export interface PartitionedRateLimiterOptions {
  /** The quota's name; every process sharing it uses the same one. 1-128 chars of `A-Z a-z 0-9 . _ -`. */
  resource: string;
  /** Where leases come from. */
  backend: LeaseBackend;
  /** Units allowed in any window of `intervalMs` across all processes. Part of the plan. */
  limit?: number;
  /** The quota's window. Part of the plan. */
  intervalMs?: number;
  /** How many equal partitions the quota is split into (1-10,000). Part of the plan. */
  partitions?: number;
  /** Partitions reserved per pool, e.g. `{ ingest: 4 }`. Part of the plan. */
  pools?: Readonly<Record<string, number>>;
  /** Pacing granularity k: per partition at most c/k units per `(intervalMs + jitterMs) / k`. Default 10. Part of the plan. */
  slicesPerInterval?: number;
  /** Lease lifetime on the backend unless renewed (at most 60,000). Default 15,000. Renewed about every third of it. Part of the plan. */
  leaseTtlMs?: number;
  /** Spread of request delays to the service that the pace absorbs. Default 5. Part of the plan. */
  jitterMs?: number;
  /**
   * Worst relative clock-rate difference between processes, backend and service (0.001 = 1 ms per
   * second). Widens the safety margin and the pacing slices. Default 0.001. Part of the plan.
   */
  driftFactor?: number;
  /**
   * Adopt the plan stored in the backend, and every later epoch of it, instead of refusing to run
   * when it differs. The plan options above are then only used to create the plan where none is
   * stored, and may be left out (the limiter then waits for a plan). Default false.
   */
  followPlan?: boolean;
  /** Partitions kept even while idle. Default 0. */
  minPartitions?: number;
  /** Most partitions held at once. Default: every partition of the plan. */
  maxPartitions?: number;
  /** The pool this limiter belongs to: it gets that pool's partitions first. */
  pool?: string;
  /** Partitions guaranteed to this limiter whenever it wants them (served before fair sharing). Default 0. */
  reserve?: number;
  /** Its weight in the fair share between limiters that all want more than there is. Default 1. */
  weight?: number;
  /** This instance's identity in the backend. Default `hostname-pid-random`. */
  holderId?: string;
  /** Most waiters queued in `acquire()`. Default Infinity. */
  maxQueued?: number;
  /** With a full queue: `"reject"` the newcomer (default) or `"drop-oldest"` lowest-priority waiter. */
  queuePolicy?: QueuePolicy;
  /**
   * How long before the backend can free a lease this limiter stops using it. Default and minimum:
   * `2 × (intervalMs + jitterMs) / slicesPerInterval × (1 + driftFactor) + driftFactor × leaseTtlMs + 5`,
   * rounded up (two slices: the hand-over gap; see docs/guarantee.md).
   */
  safetyMarginMs?: number;
  /** The monotonic clock. Default {@link systemClock}. */
  clock?: Clock;
  /** Closes the limiter when aborted. */
  signal?: AbortSignal;
  /** Source of randomness in [0, 1) for candidate order and backoff jitter. Default `Math.random`; inject a seeded one to replay a test. */
  random?: () => number;
}

/** Options after validation and defaults. */
export interface ResolvedOptions {
  readonly resource: string;
  readonly backend: LeaseBackend;
  /** The plan this process was configured with; null when it follows the stored plan and gave none. */
  readonly plan: Plan | null;
  readonly followPlan: boolean;
  readonly settings: ProcessSettings;
  readonly weight: number;
  readonly holderId: string;
  readonly maxQueued: number;
  readonly queuePolicy: QueuePolicy;
  readonly clock: Clock;
  readonly signal: AbortSignal | undefined;
  readonly random: () => number;
  /** The configuration for the own plan, before the stored plan was seen; null without an own plan. */
  readonly initialConfig: PlanConfig | null;
}

// Checked by the compiler against the interface: a new option cannot be forgotten here.
const OPTION_NAMES = {
  resource: true, backend: true, limit: true, intervalMs: true, partitions: true, pools: true,
  slicesPerInterval: true, leaseTtlMs: true, jitterMs: true, driftFactor: true, followPlan: true,
  minPartitions: true, maxPartitions: true, pool: true, reserve: true, weight: true, holderId: true,
  maxQueued: true, queuePolicy: true, safetyMarginMs: true, clock: true, signal: true, random: true,
} as const satisfies Record<keyof PartitionedRateLimiterOptions, true>;

const PLAN_OPTIONS = ["limit", "intervalMs", "partitions", "pools", "slicesPerInterval", "leaseTtlMs", "jitterMs", "driftFactor"] as const;

const BACKEND_METHODS = ["ensurePlan", "readPlan", "replacePlan", "deletePlan", "tryAcquire", "heartbeat", "release", "inspect", "close"] as const satisfies readonly (keyof LeaseBackend)[];
/** Fails to compile when LeaseBackend gains a method that BACKEND_METHODS does not check. */
type UncheckedBackendMethods = Exclude<
  { [K in keyof LeaseBackend]-?: LeaseBackend[K] extends (...args: never[]) => unknown ? K : never }[keyof LeaseBackend],
  (typeof BACKEND_METHODS)[number]
>;
const everyBackendMethodChecked: [UncheckedBackendMethods] extends [never] ? true : UncheckedBackendMethods = true;
void everyBackendMethodChecked;

/** Validates options, naming the option, the value and what is allowed in every error. */
export function resolveOptions(input: PartitionedRateLimiterOptions): ResolvedOptions {
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    throw new ConfigError("options", input, "an options object");
  }
  for (const key of Object.keys(input)) {
    if (!(key in OPTION_NAMES)) throw new ConfigError("options", key, `one of ${Object.keys(OPTION_NAMES).join(", ")}`, `unknown option "${key}"`);
  }
  const o = input as unknown as Record<string, unknown>;
  const resource = resourceName("resource", o.resource);
  const backend = o.backend as LeaseBackend;
  if (
    typeof backend !== "object" || backend === null ||
    !BACKEND_METHODS.every((m) => typeof (backend as unknown as Record<string, unknown>)[m] === "function") ||
    typeof (backend as { leaseTtlRule?: unknown }).leaseTtlRule !== "object"
  ) {
    throw new ConfigError("backend", backend, "a LeaseBackend of this version (e.g. new MemoryLeaseBackend())");
  }
  const followPlan = o.followPlan === undefined ? false : o.followPlan;
  if (typeof followPlan !== "boolean") throw new ConfigError("followPlan", followPlan, "true or false");
  const givesPlan = PLAN_OPTIONS.some((k) => o[k] !== undefined);
  if (!givesPlan && !followPlan) {
    throw new ConfigError("limit", o.limit, "a finite number > 0", "set limit, intervalMs and partitions, or followPlan: true to adopt the plan stored in the backend");
  }
  const plan = givesPlan
    ? validatePlan({
        limit: o.limit as number,
        intervalMs: o.intervalMs as number,
        partitions: o.partitions as number,
        pools: o.pools as Record<string, number> | undefined,
        slicesPerInterval: o.slicesPerInterval as number | undefined,
        leaseTtlMs: o.leaseTtlMs as number | undefined,
        jitterMs: o.jitterMs as number | undefined,
        driftFactor: o.driftFactor as number | undefined,
      })
    : null;
  if (o.pool !== undefined && typeof o.pool !== "string") throw new ConfigError("pool", o.pool, "a pool name (a string)");
  const settings: ProcessSettings = {
    pool: (o.pool as string | undefined) ?? null,
    minPartitions: o.minPartitions === undefined ? undefined : finiteNumber("minPartitions", o.minPartitions, { min: 0, max: 10_000, integer: true }),
    maxPartitions: o.maxPartitions === undefined ? undefined : finiteNumber("maxPartitions", o.maxPartitions, { min: 1, max: 10_000, integer: true }),
    reserve: optionalNumber("reserve", o.reserve, 0, { min: 0, max: 10_000, integer: true }),
    safetyMarginMs: o.safetyMarginMs === undefined ? undefined : finiteNumber("safetyMarginMs", o.safetyMarginMs, { min: 0 }),
  };
  const weight = optionalNumber("weight", o.weight, 1, { min: 0, minExclusive: true, max: 1e6 });
  // Checked against the own plan at once, so a misfit fails in the constructor, not later.
  const initialConfig = plan ? resolvePlanConfig(plan, 0, settings, backend.leaseTtlRule) : null;
  const holderId = o.holderId === undefined
    ? `${hostname().replace(/[^\x21-\x7e]/g, "_").slice(0, 100)}-${process.pid}-${randomBytes(4).toString("hex")}`
    : holderIdValue("holderId", o.holderId);
  const maxQueued = o.maxQueued === undefined || o.maxQueued === Infinity
    ? Infinity
    : finiteNumber("maxQueued", o.maxQueued, { min: 0, integer: true });
  // `=== undefined`, not `??`: null is a wrong value, not a missing one.
  const queuePolicy = o.queuePolicy === undefined ? "reject" : o.queuePolicy;
  if (queuePolicy !== "reject" && queuePolicy !== "drop-oldest") {
    throw new ConfigError("queuePolicy", queuePolicy, `"reject" or "drop-oldest"`);
  }
  const clock = (o.clock === undefined ? systemClock : o.clock) as Clock;
  if (typeof clock !== "object" || clock === null || typeof clock.now !== "function" || typeof clock.setTimeout !== "function" || typeof clock.clearTimeout !== "function") {
    throw new ConfigError("clock", o.clock, "a Clock with now(), setTimeout() and clearTimeout()");
  }
  const givenRandom = (o.random === undefined ? Math.random : o.random) as () => number;
  if (typeof givenRandom !== "function") throw new ConfigError("random", o.random, "a function returning a number in [0, 1)");
  // A value outside [0, 1) (a seeded generator returning integers, NaN) must not index past a
  // candidate list or turn a backoff into NaN: it is folded into [0, 1).
  const random = () => {
    const r = givenRandom();
    if (!Number.isFinite(r)) return 0;
    const folded = Math.abs(r) % 1;
    return folded;
  };
  const signal = optionalSignal("signal", o.signal);
  return {
    resource, backend, plan, followPlan, settings, weight, holderId, maxQueued, queuePolicy, clock, signal, random, initialConfig,
  };
}
