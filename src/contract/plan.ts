import { createHash } from "node:crypto";
import { ConfigError } from "../errors/config-error.js";
import { PlanMismatchError } from "../errors/plan-mismatch-error.js";
import { MAX_LEASE_TTL_MS, backendEpochGraceMs, minimumSafetyMarginMs } from "./timing.js";
import { unitScaleOf } from "./units.js";
import { finiteNumber, optionalNumber, type NumberRange } from "./validate.js";

/**
 * Plan is the contract between every process sharing a resource: the quota and every setting the
 * safety argument (docs/guarantee.md) depends on. It is stored in the backend on first use and
 * compared field by field; a process configured differently admits nothing (PlanMismatchError).
 */
export interface Plan {
  /** Units allowed in any window of `intervalMs`. */
  readonly limit: number;
  /** The quota's window, in ms. */
  readonly intervalMs: number;
  /** How many equal partitions the quota is split into. */
  readonly partitions: number;
  /**
   * Reserved partitions per pool, e.g. `{ ingest: 4 }`. Pools take partitions in order of their
   * names, from partition 0 up; the rest are shared.
   */
  readonly pools: Readonly<Record<string, number>>;
  /** Pacing granularity k: per partition at most `limit / partitions / k` units per slice. */
  readonly slicesPerInterval: number;
  /** Lease lifetime on the backend unless renewed, in ms; also the grace after a backend forgot leases. */
  readonly leaseTtlMs: number;
  /** Spread of request delays to the service that the pace absorbs, in ms. */
  readonly jitterMs: number;
  /** Worst relative clock-rate difference between processes, backend and service. */
  readonly driftFactor: number;
}

/** A plan as a caller gives it: the quota is required, the timing fields have defaults. */
export interface PlanInput {
  readonly limit: number;
  readonly intervalMs: number;
  readonly partitions: number;
  readonly pools?: Readonly<Record<string, number>>;
  readonly slicesPerInterval?: number;
  readonly leaseTtlMs?: number;
  readonly jitterMs?: number;
  readonly driftFactor?: number;
}

/** A plan as stored: the plan and its epoch, which grows by one with every replacement. */
export interface StoredPlan {
  readonly plan: Plan;
  /** 1 for the first plan of a resource; +1 for each `replacePlan`. */
  readonly epoch: number;
}

/** Defaults of the plan's timing fields. */
export const PLAN_DEFAULTS = { slicesPerInterval: 10, leaseTtlMs: 15_000, jitterMs: 5, driftFactor: 0.001 } as const;

/**
 * The largest `limit` accepted: 2^50 units per interval (byte quotas such as 2 GiB per minute fit
 * with room to spare). Costs are counted exactly in integers of `1 / unitScale`, see units.ts.
 */
export const MAX_LIMIT = 2 ** 50;

/**
 * The range of each numeric plan field, checked by {@link validatePlan} and by the command line's
 * `plan` command. `jitterMs` is also at most `intervalMs`; a plan has further relations (a TTL of
 * at least twice the minimum safety margin, at least one counting unit per slice).
 */
export const PLAN_RANGES = {
  limit: { min: 0, minExclusive: true, max: MAX_LIMIT },
  intervalMs: { min: 1, max: 86_400_000, integer: true },
  partitions: { min: 1, max: 10_000, integer: true },
  slicesPerInterval: { min: 1, max: 1000, integer: true },
  leaseTtlMs: { min: 100, max: MAX_LEASE_TTL_MS, integer: true },
  jitterMs: { min: 0 },
  driftFactor: { min: 0, max: 0.1 },
} as const satisfies Record<Exclude<keyof Plan, "pools">, NumberRange>;

/** The plan fields, in canonical order. */
export const PLAN_FIELDS = [
  "driftFactor", "intervalMs", "jitterMs", "leaseTtlMs", "limit", "partitions", "pools", "slicesPerInterval",
] as const satisfies readonly (keyof Plan)[];

/** The name of one plan field. */
export type PlanField = (typeof PLAN_FIELDS)[number];

/** Pool names: like resource names, 1-64 chars. */
const POOL_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/**
 * Validates a plan and fills in defaults, throwing ConfigError naming the field (`prefix` is put
 * before each name, e.g. `"plan."`). Returns a normalised copy.
 */
export function validatePlan(input: PlanInput, prefix = ""): Plan {
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    throw new ConfigError(prefix ? prefix.replace(/\.$/, "") : "plan", input, "a plan object { limit, intervalMs, partitions, … }");
  }
  const o = input as unknown as Record<string, unknown>;
  const limit = finiteNumber(`${prefix}limit`, o.limit, PLAN_RANGES.limit);
  const intervalMs = finiteNumber(`${prefix}intervalMs`, o.intervalMs, PLAN_RANGES.intervalMs);
  const partitions = finiteNumber(`${prefix}partitions`, o.partitions, PLAN_RANGES.partitions);
  const pools = validatePools(o.pools, partitions, prefix);
  const slicesPerInterval = optionalNumber(`${prefix}slicesPerInterval`, o.slicesPerInterval, PLAN_DEFAULTS.slicesPerInterval, PLAN_RANGES.slicesPerInterval);
  const driftFactor = optionalNumber(`${prefix}driftFactor`, o.driftFactor, PLAN_DEFAULTS.driftFactor, PLAN_RANGES.driftFactor);
  // The default is capped like a given value would be, so a very short window still makes a plan
  // whose stored text reads back (jitter above the window is refused when decoding).
  const jitterMs = optionalNumber(`${prefix}jitterMs`, o.jitterMs, Math.min(PLAN_DEFAULTS.jitterMs, intervalMs), { ...PLAN_RANGES.jitterMs, max: intervalMs });
  const leaseTtlMs = optionalNumber(`${prefix}leaseTtlMs`, o.leaseTtlMs, PLAN_DEFAULTS.leaseTtlMs, PLAN_RANGES.leaseTtlMs);
  const plan: Plan = { limit, intervalMs, partitions, pools, slicesPerInterval, leaseTtlMs, jitterMs, driftFactor };
  const margin = minimumSafetyMarginMs(plan);
  if (margin * 2 > leaseTtlMs) {
    throw new ConfigError(
      `${prefix}leaseTtlMs`,
      leaseTtlMs,
      `at least 2 × the minimum safety margin = ${margin * 2}`,
      `a lease must stay usable for more than one renewal period after its margin; the margin is at least 2 × (intervalMs + jitterMs) / slicesPerInterval × (1 + driftFactor) + driftFactor × leaseTtlMs + 5 = ${margin}`,
    );
  }
  const scale = unitScaleOf(limit);
  if (Math.floor(((limit / partitions) * scale) / slicesPerInterval) < 1) {
    throw new ConfigError(
      `${prefix}slicesPerInterval`,
      slicesPerInterval,
      `at most limit / partitions × ${scale} = ${Math.floor((limit / partitions) * scale)}`,
      `each slice of a partition must hold at least one counting unit (1/${scale} of a unit)`,
    );
  }
  return plan;
}

function validatePools(value: unknown, partitions: number, prefix: string): Record<string, number> {
  const poolsIn = value ?? {};
  if (typeof poolsIn !== "object" || poolsIn === null || Array.isArray(poolsIn)) {
    throw new ConfigError(`${prefix}pools`, poolsIn, "an object mapping pool names to partition counts");
  }
  const pools: Record<string, number> = {};
  let reserved = 0;
  for (const name of Object.keys(poolsIn).sort()) {
    if (!POOL_PATTERN.test(name)) {
      throw new ConfigError(`${prefix}pools`, name, "pool names of 1-64 characters from A-Z a-z 0-9 . _ -");
    }
    const count = finiteNumber(`${prefix}pools.${name}`, (poolsIn as Record<string, unknown>)[name], { min: 1, integer: true });
    pools[name] = count;
    reserved += count;
  }
  if (reserved > partitions) {
    throw new ConfigError(`${prefix}pools`, poolsIn, `at most ${partitions} partitions reserved in all (partitions)`, `${reserved} reserved`);
  }
  return pools;
}

/** The canonical JSON of a plan (fields in sorted order), used to store and compare plans. */
export function canonicalPlan(plan: Plan): string {
  const pools = Object.keys(plan.pools)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${plan.pools[k]}`)
    .join(",");
  return (
    `{"driftFactor":${plan.driftFactor},"intervalMs":${plan.intervalMs},"jitterMs":${plan.jitterMs},` +
    `"leaseTtlMs":${plan.leaseTtlMs},"limit":${plan.limit},"partitions":${plan.partitions},` +
    `"pools":{${pools}},"slicesPerInterval":${plan.slicesPerInterval}}`
  );
}

/** Whether two plans are the same contract. */
export function samePlan(a: Plan, b: Plan): boolean {
  return canonicalPlan(a) === canonicalPlan(b);
}

/** The names of the fields in which `a` and `b` differ, for error messages. */
export function planDifferences(a: Plan, b: Plan): PlanField[] {
  return PLAN_FIELDS.filter((field) =>
    field === "pools" ? JSON.stringify(sortedPools(a.pools)) !== JSON.stringify(sortedPools(b.pools)) : a[field] !== b[field],
  );
}

function sortedPools(pools: Readonly<Record<string, number>>): [string, number][] {
  return Object.keys(pools).sort().map((k) => [k, pools[k] ?? 0]);
}

/**
 * The text a backend stores for a resource's plan: `{"epoch":E,"plan":{…canonical…},"restoreGraceMs":N}`,
 * where N is `backendEpochGraceMs(plan)`, so that a backend script applies the grace without
 * repeating the timing rules. Redis scripts read `epoch`, `plan.partitions`, `plan.leaseTtlMs` and
 * `restoreGraceMs` from it with cjson. Requests compare the whole text: equal epochs alone do not
 * make equal plans.
 */
export function encodeStoredPlan(stored: StoredPlan): string {
  return `{"epoch":${stored.epoch}${storedPlanBody(stored.plan)}`;
}

/**
 * A short digest of a stored plan's text, for backends that compare plans through metadata (an
 * Azure blob's) rather than the text itself: equal digests, equal stored plans.
 */
export function storedPlanDigest(stored: StoredPlan): string {
  return createHash("sha256").update(encodeStoredPlan(stored)).digest("hex").slice(0, 32);
}

/** The stored text after its epoch: what a backend script appends to `{"epoch":E` when it stores a plan. */
export function storedPlanBody(plan: Plan): string {
  return `,"plan":${canonicalPlan(plan)},"restoreGraceMs":${backendEpochGraceMs(plan)}}`;
}

/** What a stored plan text turned out to be. */
export type DecodedPlan =
  | { readonly kind: "plan"; readonly stored: StoredPlan }
  /** A plan stored by version 0.1 (no epoch, no timing fields): it must be replaced, see README "Upgrading". */
  | { readonly kind: "legacy"; readonly text: string }
  | { readonly kind: "unreadable"; readonly text: string };

/** Decodes a stored plan text (see {@link encodeStoredPlan}); never throws. */
export function decodeStoredPlan(text: string): DecodedPlan {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { kind: "unreadable", text };
  }
  if (typeof value !== "object" || value === null) return { kind: "unreadable", text };
  const record = value as Record<string, unknown>;
  if (!("epoch" in record) && "limit" in record && !("slicesPerInterval" in record)) return { kind: "legacy", text };
  try {
    const epoch = finiteNumber("epoch", record.epoch, { min: 1, max: Number.MAX_SAFE_INTEGER, integer: true });
    const planValue = record.plan as Record<string, unknown> | undefined;
    for (const field of PLAN_FIELDS) {
      if (field !== "pools" && (typeof planValue !== "object" || planValue === null || !(field in planValue))) return { kind: "unreadable", text };
    }
    const stored = { epoch, plan: validatePlan(planValue as unknown as PlanInput) };
    // Only the canonical form: requests compare stored texts, so another spelling of the same plan
    // would never match (a plan edited by hand is refused rather than followed in a loop).
    if (encodeStoredPlan(stored) !== text) return { kind: "unreadable", text };
    return { kind: "plan", stored };
  } catch {
    return { kind: "unreadable", text };
  }
}

/** The pool of each partition (null for shared ones): pools in name order take partitions from 0. */
export function partitionPools(plan: Pick<Plan, "partitions" | "pools">): (string | null)[] {
  const result: (string | null)[] = new Array<string | null>(plan.partitions).fill(null);
  let next = 0;
  for (const name of Object.keys(plan.pools).sort()) {
    for (let i = 0; i < (plan.pools[name] ?? 0); i++) result[next++] = name;
  }
  return result;
}

/** A one-line description of a plan for messages and the CLI. */
export function describePlan(plan: Plan): string {
  const pools = Object.entries(plan.pools).map(([name, n]) => `${name}=${n}`).join(", ");
  return (
    `limit ${plan.limit} per ${plan.intervalMs} ms, ${plan.partitions} partitions of ${+(plan.limit / plan.partitions).toFixed(6)}` +
    `${pools ? `, pools ${pools}` : ""}, ${plan.slicesPerInterval} slices per interval, lease TTL ${plan.leaseTtlMs} ms, ` +
    `jitter ${plan.jitterMs} ms, drift ${plan.driftFactor}`
  );
}

/** The PlanMismatchError for a stored plan that differs from `wanted`, naming each differing field. */
export function planMismatch(resource: string, stored: StoredPlan, wanted: Plan): PlanMismatchError {
  const fields = planDifferences(stored.plan, wanted);
  const what = fields.map((f) => `${f} (stored ${JSON.stringify(stored.plan[f])}, here ${JSON.stringify(wanted[f])})`).join(", ");
  return new PlanMismatchError(
    resource,
    encodeStoredPlan(stored),
    canonicalPlan(wanted),
    `(epoch ${stored.epoch}) differs from this limiter's in ${what}`,
    fields,
  );
}

/**
 * The stored plan a text decodes to; PlanMismatchError when it is unreadable or was written by
 * version 0.1 (which stored no epoch and none of the timing fields).
 */
export function storedPlanOrThrow(resource: string, text: string): StoredPlan {
  const decoded = decodeStoredPlan(text);
  if (decoded.kind === "plan") return decoded.stored;
  if (decoded.kind === "legacy") {
    throw new PlanMismatchError(
      resource,
      text,
      "",
      `was written by partitioned-rate-limiter 0.1 (${text}) and lacks the epoch and the timing fields; stop the 0.1 processes, then store a plan with \`partitioned-rate-limiter plan ${resource} --replace …\``,
    );
  }
  throw new PlanMismatchError(resource, text, "", `cannot be read (${text.length > 200 ? `${text.slice(0, 200)}…` : text})`);
}
