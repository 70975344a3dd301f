/**
 * DemandMeter counts units over the last interval (wanted: admitted plus refused; or admitted), in
 * ten buckets of `intervalMs / 10`, to size how many partitions to want.
 */
export class DemandMeter {
  private readonly buckets = new Float64Array(10);
  private readonly bucketMs: number;
  private currentBucket = -Infinity;

  constructor(readonly intervalMs: number) {
    this.bucketMs = intervalMs / 10;
  }

  /** Adds `units` at `now`. */
  record(units: number, now: number): void {
    this.roll(now);
    this.buckets[((this.currentBucket % 10) + 10) % 10]! += units;
  }

  /**
   * Units per interval: the larger of the last interval's total and the rate of its
   * last fifth (the current bucket and the one before, scaled up). The recent rate lets a
   * saturated limiter see the capacity it just gained within a fifth of an interval, so its
   * holding grows by the headroom every fifth instead of every interval.
   */
  total(now: number): number {
    this.roll(now);
    let sum = 0;
    for (const b of this.buckets) sum += b;
    const current = ((this.currentBucket % 10) + 10) % 10;
    const recent = this.buckets[current]! + this.buckets[(current + 9) % 10]!;
    return Math.max(sum, recent * 5);
  }

  private roll(now: number): void {
    const bucket = Math.floor(now / this.bucketMs);
    if (bucket === this.currentBucket) return;
    if (bucket - this.currentBucket >= 10) this.buckets.fill(0);
    else for (let b = this.currentBucket + 1; b <= bucket; b++) this.buckets[((b % 10) + 10) % 10] = 0;
    this.currentBucket = bucket;
  }
}
