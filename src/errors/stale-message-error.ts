import { PartitionedRateLimiterError } from "./partitioned-rate-limiter-error.js";

/**
 * StaleMessageError: a consumer no longer holds a message it received: its visibility timeout or
 * claim ran out before it could be renewed, or the queue says another consumer has it now. The
 * consumer does not run the handler for it (the message is another consumer's to handle) and does
 * not settle it; it reaches `onError` with the category `"stale"`.
 */
export class StaleMessageError extends PartitionedRateLimiterError {
  readonly code = "ERR_STALE_MESSAGE" as const;
  /** The source's name, e.g. `"azure-queue"`. */
  readonly source: string;
  /** The queue's id of the message. */
  readonly messageId: string;

  constructor(source: string, messageId: string, reason: string) {
    super(`${source}: message ${messageId} is no longer held by this consumer (${reason}); it was not handled here and the queue delivers it again.`);
    this.source = source;
    this.messageId = messageId;
  }

  /** Whether `value` is a StaleMessageError (from any copy of this package). */
  static is(value: unknown): value is StaleMessageError {
    return PartitionedRateLimiterError.isError(value, "ERR_STALE_MESSAGE");
  }
}
