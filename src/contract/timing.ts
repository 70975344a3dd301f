import type { Plan } from "./plan.js";

/**
 * Every timing relation of the protocol, in one place. docs/guarantee.md numbers the rules these
 * functions implement; test/unit/timing.test.ts checks how they relate. Times are in ms, on the
 * monotonic clock of whoever applies them (a backend applies graces on its own clock).
 */

/** The timing fields of a plan that the relations below read. */
export type PlanTiming = Pick<Plan, "intervalMs" | "slicesPerInterval" | "leaseTtlMs" | "jitterMs" | "driftFactor">;

/**
 * The longest lease TTL any process may use (Azure's maximum lease). It bounds how long a lease a
 * backend forgot can still be in use, so it is the grace of a plan created by a process that
 * knows nothing about earlier grants (rule G1 in docs/guarantee.md).
 */
export const MAX_LEASE_TTL_MS = 60_000;

/**
 * One pacing slice: `(intervalMs + jitterMs) / slicesPerInterval`, stretched by the allowed clock
 * drift. `slicesPerInterval` such slices cover an interval plus the jitter on every clock (rule P2).
 */
export function sliceLengthMs(plan: PlanTiming): number {
  return ((plan.intervalMs + plan.jitterMs) / plan.slicesPerInterval) * (1 + plan.driftFactor);
}

/**
 * The smallest safe margin between a holder's local deadline and the backend's expiry: the
 * hand-over gap of two slices, the drift the TTL can accumulate, and 5 ms for timer lateness
 * (rule H2).
 */
export function minimumSafetyMarginMs(plan: PlanTiming): number {
  return Math.ceil(2 * sliceLengthMs(plan) + plan.driftFactor * plan.leaseTtlMs + 5);
}

/**
 * How long a partition must have been quiet before it is released: two slices, stretched by
 * drift, plus 1 ms. A holder's partition admits at most `burst + rate × L` in any window of
 * length L (burst one slice's share); a gap of `2 × burst / rate` = two slices between the last
 * admission of one holder and the first of the next (who starts with an empty history) keeps any
 * interval window they share within the partition's capacity (rule H1).
 */
export function quietMs(plan: PlanTiming): number {
  return 2 * sliceLengthMs(plan) * (1 + plan.driftFactor) + 1;
}

/** How often a holder renews its leases and publishes its demand: a third of the TTL. */
export function renewEveryMs(plan: PlanTiming): number {
  return Math.floor(plan.leaseTtlMs / 3);
}

/** The pause before retrying a failed renewal: short, so a blip does not cost the lease. */
export function renewRetryMs(plan: PlanTiming): number {
  return Math.max(50, Math.min(renewEveryMs(plan), plan.leaseTtlMs / 10));
}

/**
 * The timeout of each backend call: half of what is left of a lease after its margin and one
 * renewal period, between 50 ms and 5 s, so a renewal that times out still leaves time for
 * another before the deadline.
 */
export function backendTimeoutMs(plan: PlanTiming, safetyMarginMs: number): number {
  return Math.max(50, Math.min(5_000, Math.floor((plan.leaseTtlMs - safetyMarginMs - renewEveryMs(plan)) / 2)));
}

/** How long a surplus must last before a partition is given back (no thrash): 3 intervals, at least 2 s. */
export function hysteresisMs(plan: PlanTiming): number {
  return Math.max(3 * plan.intervalMs, 2_000);
}

/** The longest pause between acquire attempts when nothing is free: a quarter TTL, at most 1 s. */
export function maxBackoffMs(plan: PlanTiming): number {
  return Math.max(50, Math.min(1_000, plan.leaseTtlMs / 4));
}

/**
 * The pause after `failures` consecutive failed attempts: exponential from 50 ms up to
 * {@link maxBackoffMs}, with jitter in [50%, 100%] from `random` (injectable for replay).
 */
export function backoffMs(plan: PlanTiming, failures: number, random: () => number): number {
  const ceiling = Math.min(maxBackoffMs(plan), 50 * 2 ** Math.min(Math.max(failures, 0), 10));
  return ceiling * (0.5 + random() * 0.5);
}

/** The shortest early heartbeat spacing: demand that rose is published at most this often. */
export function earlyHeartbeatSpacingMs(plan: PlanTiming): number {
  return Math.max(100, renewEveryMs(plan) / 4);
}

/** One interval plus jitter, stretched by drift: no window of the quota is longer. */
export function windowSpanMs(plan: PlanTiming): number {
  return (plan.intervalMs + plan.jitterMs) * (1 + plan.driftFactor);
}

/**
 * What the process that stores a plan knows about earlier grants on the resource, which decides
 * the plan's grace (rules G1 and G3):
 * - `"unknown"`: nothing; leases of any plan, of any TTL up to {@link MAX_LEASE_TTL_MS}, may
 *   still be in use.
 * - `"lost"`: the caller proves every forgotten lease was of this very plan: its last heartbeat
 *   found exactly this plan stored with no grace running, less than {@link lostHistoryWindowMs}
 *   before it saw the plan gone (see docs/guarantee.md, G3). The limiter decides this itself.
 * - `"fresh"`: the caller asserts that no lease was ever granted on this resource by this backend
 *   (a server it started itself, a test). Wrong assertions break the promise.
 */
export type PlanHistory = "unknown" | "lost" | "fresh";

/**
 * The grace when nothing is known about the leases a backend may have forgotten: they may be of
 * another plan (an older one, or one replaced since a snapshot was taken), with any TTL up to the
 * maximum. After {@link MAX_LEASE_TTL_MS} they have expired; one more window of this plan passes
 * so that no window of it holds admissions of both (rule G1).
 */
export function unknownHistoryGraceMs(plan: PlanTiming): number {
  return MAX_LEASE_TTL_MS + Math.ceil(windowSpanMs(plan)) + 1;
}

/**
 * The grace of a plan a backend stores where none was: no lease is granted for this long, unless
 * the backend proves that nothing it granted before can still be in use (it has been up longer
 * than this grace with no trace of the resource).
 */
export function creationGraceMs(plan: PlanTiming, history: PlanHistory): number {
  switch (history) {
    case "fresh":
      return 0;
    case "lost":
      // Every forgotten lease was of this plan: the per-partition hand-over argument applies.
      return plan.leaseTtlMs;
    case "unknown":
      return unknownHistoryGraceMs(plan);
  }
}

/**
 * The grace after a backend is found to have forgotten leases while keeping a plan (a restart
 * from a snapshot, a promoted replica): as for an unknown history, since the restored plan may be
 * older than the one the forgotten leases were granted under (rule G2). Backends apply it from the
 * stored plan, never from a caller; Redis scripts read it from the stored text.
 */
export function backendEpochGraceMs(plan: PlanTiming): number {
  return unknownHistoryGraceMs(plan);
}

/**
 * How long after a heartbeat that found its plan stored with no grace running a limiter may still
 * vouch that every lease the backend forgets was of that plan (rule G3): a plan stored after that
 * heartbeat grants nothing for at least this plan's TTL plus a window (a switch grace), so until
 * then every lease in use is of this plan. Measured on the limiter's clock (hence the drift), minus
 * the timeout of the call that finds the plan gone (it may be processed that much later than sent).
 */
export function lostHistoryWindowMs(plan: PlanTiming, callTimeoutMs: number): number {
  return (plan.leaseTtlMs + windowSpanMs(plan)) / (1 + plan.driftFactor) - callTimeoutMs;
}

/**
 * The grace when `next` replaces `previous` (rule E1): every lease of the old epoch has expired on
 * the backend after `previous.leaseTtlMs` (renewals of old-epoch leases are refused), and one more
 * window of either plan passes before anything is granted, so no window of the quota holds
 * admissions of both epochs and none exceeds the lower of the two limits.
 */
export function switchGraceMs(previous: PlanTiming, next: PlanTiming): number {
  return previous.leaseTtlMs + Math.ceil(Math.max(windowSpanMs(previous), windowSpanMs(next))) + 1;
}

/** The grace after a plan is deleted: as a switch to a plan with the same timing. */
export function deletionGraceMs(previous: PlanTiming): number {
  return switchGraceMs(previous, previous);
}
