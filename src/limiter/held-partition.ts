import type { Lease } from "../contract/lease-backend.js";
import { PartitionWindow } from "./partition-window.js";

/**
 * HeldPartition is a lease this limiter holds, with its local deadline and its pacing window.
 * It may be charged only while `now < validUntil` and it is not draining.
 */
export class HeldPartition {
  /** Local deadline on the monotonic clock: last acquire/renew *send* time + ttl − margin. */
  validUntil: number;
  /** When the last successful renew (or the acquire) was sent. */
  renewedSentAt: number;
  /** When the last renew attempt was sent, successful or not. */
  lastRenewAttemptAt: number;
  renewInFlight = false;
  /** Set when the partition stops admitting before release (surplus, close, expiry). */
  draining = false;
  readonly window: PartitionWindow;

  constructor(
    public lease: Lease,
    sentAt: number,
    validUntil: number,
    capacity: number,
    windowMs: number,
    mergeMs: number,
  ) {
    this.validUntil = validUntil;
    this.renewedSentAt = sentAt;
    this.lastRenewAttemptAt = sentAt;
    this.window = new PartitionWindow(capacity, windowMs, mergeMs);
  }

  /** The partition index. */
  get partition(): number {
    return this.lease.partition;
  }

  /** Whether admissions may be charged to it at `now`. */
  usable(now: number): boolean {
    return !this.draining && now < this.validUntil;
  }
}
