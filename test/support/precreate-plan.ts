import type { LeaseBackend } from "../../src/contract/lease-backend.js";
import { validatePlan, type PlanInput, type StoredPlan } from "../../src/contract/plan.js";

// No jest imports here: workers and benchmarks use it too.

/**
 * Stores the plan that limiters built with `options` will use, with no grace: the tests and
 * benchmarks start their servers themselves, so they know no lease was ever granted there
 * (`history: "fresh"`). Without it a server up for less than a minute would hold the first grants
 * back for MAX_LEASE_TTL_MS (it cannot tell a first start from a restart that forgot leases).
 */
export function precreatePlan(backend: LeaseBackend, resource: string, options: PlanInput, timeoutMs = 10_000): Promise<StoredPlan> {
  const plan = validatePlan({
    limit: options.limit,
    intervalMs: options.intervalMs,
    partitions: options.partitions,
    pools: options.pools,
    slicesPerInterval: options.slicesPerInterval,
    leaseTtlMs: options.leaseTtlMs,
    jitterMs: options.jitterMs,
    driftFactor: options.driftFactor,
  });
  return backend.ensurePlan(resource, plan, { history: "fresh", timeoutMs });
}
