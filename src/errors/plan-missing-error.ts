import { PartitionedRateLimiterError } from "./partitioned-rate-limiter-error.js";

/**
 * PlanMissingError: a backend was asked for a lease on a resource that has no stored plan, as
 * after a backend lost its state. The limiter answers by storing the plan again, which starts a
 * grace period (see `LeaseBackend.ensurePlan`).
 */
export class PlanMissingError extends PartitionedRateLimiterError {
  readonly code = "ERR_PLAN_MISSING" as const;
  /** The resource without a plan. */
  readonly resource: string;

  constructor(resource: string) {
    super(`No plan is stored for resource "${resource}"; call ensurePlan first.`);
    this.resource = resource;
  }

  /** Whether `value` is a PlanMissingError (from any copy of this package). */
  static is(value: unknown): value is PlanMissingError {
    return PartitionedRateLimiterError.isError(value, "ERR_PLAN_MISSING");
  }
}
