import { PartitionedRateLimiterError } from "./partitioned-rate-limiter-error.js";

/**
 * PlanMismatchError: the plan stored in the backend for this resource differs from the one this
 * limiter was configured with. Two processes splitting one quota differently would break the
 * promise, so the limiter refuses to run.
 */
export class PlanMismatchError extends PartitionedRateLimiterError {
  readonly code = "ERR_PLAN_MISMATCH" as const;
  /** The resource whose plan disagrees. */
  readonly resource: string;
  /** The plan stored in the backend (canonical JSON). */
  readonly stored: string;
  /** The plan this process asked for (canonical JSON). */
  readonly requested: string;

  constructor(resource: string, stored: string, requested: string) {
    super(
      `The plan stored for resource "${resource}" is ${stored}, but this limiter was configured ` +
        `with ${requested}. Every process sharing a resource must use the same limit, intervalMs, ` +
        `partitions and pools; change them under a new resource name.`,
    );
    this.resource = resource;
    this.stored = stored;
    this.requested = requested;
  }

  /** Whether `value` is a PlanMismatchError (from any copy of this package). */
  static is(value: unknown): value is PlanMismatchError {
    return PartitionedRateLimiterError.isError(value, "ERR_PLAN_MISMATCH");
  }
}
