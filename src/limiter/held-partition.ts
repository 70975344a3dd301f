import type { Lease } from "../contract/lease-backend.js";
import type { PartitionPace } from "./partition-pace.js";

/**
 * HeldPartition is a lease this limiter holds, with its local deadline and its pacing state.
 * It may be charged only while `now < validUntil` and it is not draining.
 */
export class HeldPartition {
  /** Local deadline on the monotonic clock: last acquire/renew *send* time + ttl − margin. */
  validUntil: number;
  /** When the last successful renewal (or the acquire) was sent. */
  renewedSentAt: number;
  /** Set when the partition stops admitting before release (surplus, close, expiry). */
  draining = false;
  /**
   * Set when the local deadline passed without a renewal while running: it admits nothing, and is
   * kept (renewed with the others) until a heartbeat says whether the backend still holds it as
   * this grant; a successful renewal clears it.
   */
  lapsed = false;
  constructor(
    public lease: Lease,
    sentAt: number,
    validUntil: number,
    /** Its pacing state; a new holder starts with an empty history. */
    readonly pace: PartitionPace,
  ) {
    this.validUntil = validUntil;
    this.renewedSentAt = sentAt;
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
