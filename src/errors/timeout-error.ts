import { PartitionedRateLimiterError } from "./partitioned-rate-limiter-error.js";

/**
 * TimeoutError: an operation did not finish within its `timeoutMs`, or could not possibly finish
 * within it (then it fails at once rather than at the deadline). When a limiter's `acquire()`
 * times out because the backend is failing, `cause` is the backend's last error.
 */
export class TimeoutError extends PartitionedRateLimiterError {
  readonly code = "ERR_TIMEOUT" as const;
  /** The timeout that ran out, in ms. */
  readonly timeoutMs: number;

  constructor(what: string, timeoutMs: number, detail?: string, options?: { cause?: unknown }) {
    super(`${what} timed out after ${timeoutMs} ms${detail ? ` (${detail})` : ""}.`, options);
    this.timeoutMs = timeoutMs;
  }

  /** Whether `value` is a TimeoutError (from any copy of this package). */
  static is(value: unknown): value is TimeoutError {
    return PartitionedRateLimiterError.isError(value, "ERR_TIMEOUT");
  }
}
