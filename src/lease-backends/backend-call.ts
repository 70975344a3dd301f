import { BackendError } from "../errors/backend-error.js";
import { PartitionedRateLimiterError } from "../errors/partitioned-rate-limiter-error.js";
import { systemClock, type Clock } from "../contract/clock.js";
import type { CallOptions } from "../contract/lease-backend.js";
import { withDeadline } from "./call-deadline.js";

/**
 * Runs one backend operation under the caller's signal and timeout (see {@link withDeadline}) and
 * maps its failures the same way for every backend: an abort rejects with the signal's reason,
 * this library's own errors pass through, anything else becomes a BackendError naming the
 * backend and the operation, with the original as `cause`.
 */
export function backendCall<T>(
  backend: string,
  operation: string,
  opts: CallOptions | undefined,
  work: (signal: AbortSignal) => Promise<T>,
  clock: Clock = systemClock,
): Promise<T> {
  return withDeadline(
    `${backend} backend ${operation}`,
    opts,
    async (signal) => {
      try {
        return await work(signal);
      } catch (error) {
        if (signal.aborted) throw signal.reason;
        if (PartitionedRateLimiterError.isError(error)) throw error;
        throw new BackendError(backend, operation, error);
      }
    },
    clock,
  );
}
