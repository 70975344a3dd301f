import { PartitionedRateLimiterError } from "./partitioned-rate-limiter-error.js";

/**
 * PlanMismatchError: the plan stored in the backend for this resource is not the one this limiter
 * was configured with (or cannot be read). The plan is the contract between every process sharing
 * the resource, so the limiter admits nothing under another one.
 */
export class PlanMismatchError extends PartitionedRateLimiterError {
  readonly code = "ERR_PLAN_MISMATCH" as const;
  /** The resource whose plan disagrees. */
  readonly resource: string;
  /** The plan stored in the backend (its stored text). */
  readonly stored: string;
  /** The plan this process asked for (canonical JSON), or "" when it asked for none. */
  readonly requested: string;
  /** The fields that differ, e.g. `["slicesPerInterval"]`; empty when the stored plan is unreadable. */
  readonly fields: readonly string[];

  /**
   * Creates the error. `detail` says what differs or why the stored plan is unusable; the message
   * always says what to do.
   */
  constructor(resource: string, stored: string, requested: string, detail?: string, fields: readonly string[] = []) {
    super(
      `The plan stored for resource "${resource}" ${detail ?? `is ${stored}, but this limiter was configured with ${requested}`}. ` +
        `Every process sharing a resource must use the same plan (limit, intervalMs, partitions, pools, slicesPerInterval, ` +
        `leaseTtlMs, jitterMs, driftFactor): configure this process like the stored plan, set followPlan: true to adopt it, ` +
        `or change the plan for everyone with \`partitioned-rate-limiter plan ${resource} --replace …\`.`,
    );
    this.resource = resource;
    this.stored = stored;
    this.requested = requested;
    this.fields = fields;
  }

  /** Whether `value` is a PlanMismatchError (from any copy of this package). */
  static is(value: unknown): value is PlanMismatchError {
    return PartitionedRateLimiterError.isError(value, "ERR_PLAN_MISMATCH");
  }
}
