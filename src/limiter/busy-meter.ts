/**
 * BusyMeter measures what share of recent time callers were waiting for capacity (the wait
 * queue was not empty). A caller that always has a waiter queued the moment it is admitted wants
 * more than it holds, however few items it queues at once: that is how a plain `await acquire()`
 * loop or a `pace()` pipeline is told apart from light demand.
 */
export class BusyMeter {
  private busySince: number | null = null;
  /** Busy ms per bucket of `windowMs / 10`. */
  private readonly buckets = new Float64Array(10);
  private readonly bucketMs: number;
  private currentBucket = -Infinity;
  private readonly startedAt: number;

  constructor(private readonly windowMs: number, now: number) {
    this.bucketMs = windowMs / 10;
    this.startedAt = now;
  }

  /** The queue became non-empty (`busy`) or empty. */
  set(busy: boolean, now: number): void {
    if (busy && this.busySince === null) this.busySince = now;
    else if (!busy && this.busySince !== null) {
      this.add(this.busySince, now);
      this.busySince = null;
    }
  }

  /** The busy share of the last window (of the time since start, when shorter), 0 to 1. */
  fraction(now: number): number {
    if (this.busySince !== null) {
      this.add(this.busySince, now);
      this.busySince = now;
    }
    this.roll(now);
    let busy = 0;
    for (const b of this.buckets) busy += b;
    const span = Math.min(this.windowMs, now - this.startedAt);
    return span <= 0 ? (this.busySince !== null ? 1 : 0) : Math.min(1, busy / span);
  }

  private add(from: number, to: number): void {
    this.roll(to);
    // Only the buckets still inside the window can hold it.
    let t = Math.max(from, (this.currentBucket - 9) * this.bucketMs);
    while (t < to) {
      const bucket = Math.floor(t / this.bucketMs);
      const end = Math.min(to, (bucket + 1) * this.bucketMs);
      this.buckets[((bucket % 10) + 10) % 10]! += end - t;
      t = end;
    }
  }

  private roll(now: number): void {
    const bucket = Math.floor(now / this.bucketMs);
    if (bucket <= this.currentBucket) return;
    if (bucket - this.currentBucket >= 10) this.buckets.fill(0);
    else for (let b = this.currentBucket + 1; b <= bucket; b++) this.buckets[((b % 10) + 10) % 10] = 0;
    this.currentBucket = bucket;
  }
}
