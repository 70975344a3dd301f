import { PartitionedRateLimiterError } from "./partitioned-rate-limiter-error.js";

/**
 * SourceFailedError: a durable-queue source can deliver or settle nothing more and cannot recover
 * by itself (its AMQP channel was closed by the broker, its Redis client was quit). The consumer
 * that sees it stops, and reports it as the reason (`done` resolves with it). The broker's or
 * client's own error is `cause`. Messages the source held come back through the queue's own
 * redelivery (requeue on channel close, visibility timeout, claim idle time).
 */
export class SourceFailedError extends PartitionedRateLimiterError {
  readonly code = "ERR_SOURCE_FAILED" as const;
  /** The source's name, e.g. `"amqp"`. */
  readonly source: string;

  constructor(source: string, reason: string, cause?: unknown) {
    super(`${source} source failed and cannot recover: ${reason}`, cause === undefined ? undefined : { cause });
    this.source = source;
  }

  /** Whether `value` is a SourceFailedError (from any copy of this package). */
  static is(value: unknown): value is SourceFailedError {
    return PartitionedRateLimiterError.isError(value, "ERR_SOURCE_FAILED");
  }
}
