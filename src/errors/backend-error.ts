import { PartitionedRateLimiterError } from "./partitioned-rate-limiter-error.js";

/**
 * BackendError: a lease backend call failed (unreachable server, protocol error). It never
 * extends a lease: held partitions run to their local deadlines. The original error is `cause`.
 */
export class BackendError extends PartitionedRateLimiterError {
  readonly code = "ERR_BACKEND" as const;
  /** The backend's name, e.g. `"redis"`. */
  readonly backend: string;
  /** The call that failed, e.g. `"renew"`. */
  readonly operation: string;

  constructor(backend: string, operation: string, cause: unknown) {
    super(
      `${backend} backend: ${operation} failed: ${cause instanceof Error ? cause.message : String(cause)}`,
      { cause },
    );
    this.backend = backend;
    this.operation = operation;
  }

  /** Whether `value` is a BackendError (from any copy of this package). */
  static is(value: unknown): value is BackendError {
    return PartitionedRateLimiterError.isError(value, "ERR_BACKEND");
  }
}
