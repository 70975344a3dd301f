import { PartitionedRateLimiterError } from "./partitioned-rate-limiter-error.js";

/**
 * QueueFullError: the wait queue holds `maxQueued` waiters. With `queuePolicy: "reject"` the
 * newcomer gets it; with `"drop-oldest"` the oldest waiter of the lowest priority does.
 */
export class QueueFullError extends PartitionedRateLimiterError {
  readonly code = "ERR_QUEUE_FULL" as const;
  /** The configured `maxQueued`. */
  readonly maxQueued: number;

  constructor(maxQueued: number, dropped = false) {
    super(
      dropped
        ? `Dropped from the wait queue to make room for a newer waiter (maxQueued ${maxQueued}, queuePolicy "drop-oldest").`
        : `The wait queue is full (maxQueued ${maxQueued}, queuePolicy "reject").`,
    );
    this.maxQueued = maxQueued;
  }

  /** Whether `value` is a QueueFullError (from any copy of this package). */
  static is(value: unknown): value is QueueFullError {
    return PartitionedRateLimiterError.isError(value, "ERR_QUEUE_FULL");
  }
}
