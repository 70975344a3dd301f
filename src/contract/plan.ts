import { ConfigError } from "../errors/config-error.js";
import { finiteNumber } from "./validate.js";

/**
 * Plan is how a resource's quota is split, stored in the backend on first use. Every process
 * sharing the resource must use the same plan.
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
}

/** The largest `limit` accepted; costs are counted in integer micro-units below it. */
export const MAX_LIMIT = 2 ** 50 / 1e6;

/** Pool names: like resource names, 1-64 chars. */
const POOL_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Validates a plan, throwing ConfigError naming the field. Returns a normalised copy. */
export function validatePlan(plan: Plan, prefix = ""): Plan {
  const limit = finiteNumber(`${prefix}limit`, plan.limit, { min: 0, minExclusive: true, max: MAX_LIMIT });
  const intervalMs = finiteNumber(`${prefix}intervalMs`, plan.intervalMs, { min: 1, max: 86_400_000, integer: true });
  const partitions = finiteNumber(`${prefix}partitions`, plan.partitions, { min: 1, max: 10_000, integer: true });
  const poolsIn = plan.pools ?? {};
  if (typeof poolsIn !== "object" || poolsIn === null || Array.isArray(poolsIn)) {
    throw new ConfigError(`${prefix}pools`, poolsIn, "an object mapping pool names to partition counts");
  }
  const pools: Record<string, number> = {};
  let reserved = 0;
  for (const name of Object.keys(poolsIn).sort()) {
    if (!POOL_PATTERN.test(name)) {
      throw new ConfigError(`${prefix}pools`, name, "pool names of 1-64 characters from A-Z a-z 0-9 . _ -");
    }
    const count = finiteNumber(`${prefix}pools.${name}`, (poolsIn as Record<string, unknown>)[name], {
      min: 1,
      integer: true,
    });
    pools[name] = count;
    reserved += count;
  }
  if (reserved > partitions) {
    throw new ConfigError(`${prefix}pools`, poolsIn, `at most ${partitions} partitions reserved in all (partitions)`, `${reserved} reserved`);
  }
  return { limit, intervalMs, partitions, pools };
}

/** The canonical JSON of a plan (sorted keys), used to store and compare plans. */
export function canonicalPlan(plan: Plan): string {
  const pools = Object.keys(plan.pools)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${plan.pools[k]}`)
    .join(",");
  return `{"intervalMs":${plan.intervalMs},"limit":${plan.limit},"partitions":${plan.partitions},"pools":{${pools}}}`;
}

/** Parses a stored plan; null when it is not a valid plan (a corrupted key). */
export function parsePlan(text: string): Plan | null {
  try {
    const value = JSON.parse(text) as Plan;
    return validatePlan(value);
  } catch {
    return null;
  }
}

/** The pool of each partition (null for shared ones): pools in name order take partitions from 0. */
export function partitionPools(plan: Plan): (string | null)[] {
  const result: (string | null)[] = new Array<string | null>(plan.partitions).fill(null);
  let next = 0;
  for (const name of Object.keys(plan.pools).sort()) {
    for (let i = 0; i < (plan.pools[name] ?? 0); i++) result[next++] = name;
  }
  return result;
}
