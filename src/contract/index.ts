// What the limiter and every lease backend share: the contract a backend implements, the plan and
// its stored form, the graces a backend applies, holder records, and the clock. Public, so that a
// backend for another store can be written (and proven with partitioned-rate-limiter/testing)
// with the same rules as the ones in this package.
export type { AcquireRequest, AcquireResult, CallOptions, EnsurePlanOptions, HeartbeatRequest, HeartbeatResult, HolderRecord, Lease, LeaseBackend, LeaseTtlRule, PartitionState, PublishedHolder, ResourceState } from "./lease-backend.js";
export { systemClock } from "./clock.js";
export type { Clock, TimerHandle } from "./clock.js";
export { PLAN_DEFAULTS, canonicalPlan, decodeStoredPlan, describePlan, encodeStoredPlan, partitionPools, samePlan, storedPlanOrThrow, validatePlan } from "./plan.js";
export type { DecodedPlan, Plan, PlanField, PlanInput, StoredPlan } from "./plan.js";
export { MAX_LEASE_TTL_MS, backendEpochGraceMs, creationGraceMs, deletionGraceMs, minimumSafetyMarginMs, switchGraceMs } from "./timing.js";
export type { PlanHistory, PlanTiming } from "./timing.js";
export { decodeHolderRecord, encodeHolderRecord, validateHolderRecord } from "./holder-record.js";
