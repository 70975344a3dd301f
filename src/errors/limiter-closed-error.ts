import { PartitionedRateLimiterError } from "./partitioned-rate-limiter-error.js";

/** LimiterClosedError: the limiter was closed; waiters are rejected and nothing more is admitted. */
export class LimiterClosedError extends PartitionedRateLimiterError {
  readonly code = "ERR_LIMITER_CLOSED" as const;

  constructor(resource: string) {
    super(`The limiter for resource "${resource}" is closed.`);
  }

  /** Whether `value` is a LimiterClosedError (from any copy of this package). */
  static is(value: unknown): value is LimiterClosedError {
    return PartitionedRateLimiterError.isError(value, "ERR_LIMITER_CLOSED");
  }
}
