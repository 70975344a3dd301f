/**
 * PartitionWindow enforces one partition's pace: at most `capacity` micro-units in any sliding
 * window of `windowMs` (one slice). It keeps a log of charges; charges closer together than
 * `mergeMs` share one entry stamped with the latest time, which bounds memory and only ever makes
 * an entry expire later (conservative).
 */
export class PartitionWindow {
  private times: number[] = [];
  private amounts: number[] = [];
  private head = 0;
  private used = 0;
  /** Monotonic time of the last charge, -Infinity if none. */
  lastChargeAt = -Infinity;

  constructor(
    /** Micro-units allowed per window. */
    public capacity: number,
    /** The slice length in ms (`(intervalMs + jitterMs) / slicesPerInterval`). */
    readonly windowMs: number,
    /** Charges within this many ms of the previous one share its entry. */
    readonly mergeMs: number,
  ) {}

  /** Micro-units that may be charged at `now`. */
  available(now: number): number {
    this.expire(now);
    return this.capacity - this.used;
  }

  /** Charges `micro` at `now`. The caller checked {@link available}. */
  charge(micro: number, now: number): void {
    const last = this.times.length - 1;
    if (last >= this.head && now - this.times[last]! <= this.mergeMs) {
      this.times[last] = now;
      this.amounts[last]! += micro;
    } else {
      this.times.push(now);
      this.amounts.push(micro);
    }
    this.used += micro;
    this.lastChargeAt = now;
  }

  /**
   * The times at which charged amounts leave the window, as [time, micro] pairs in time order,
   * for computing when a waiter can next be admitted.
   */
  releases(now: number): Array<[number, number]> {
    this.expire(now);
    const out: Array<[number, number]> = [];
    for (let i = this.head; i < this.times.length; i++) out.push([this.times[i]! + this.windowMs, this.amounts[i]!]);
    return out;
  }

  /** Micro-units charged in the current window. */
  usedAt(now: number): number {
    this.expire(now);
    return this.used;
  }

  private expire(now: number): void {
    const cutoff = now - this.windowMs;
    let head = this.head;
    const times = this.times;
    if (head >= times.length || times[head]! > cutoff) return;
    while (head < times.length && times[head]! <= cutoff) {
      this.used -= this.amounts[head]!;
      head++;
    }
    if (head === times.length) {
      this.times = [];
      this.amounts = [];
      this.head = 0;
      this.used = 0;
    } else if (head > 1024 && head * 2 > times.length) {
      this.times = times.slice(head);
      this.amounts = this.amounts.slice(head);
      this.head = 0;
    } else {
      this.head = head;
    }
  }
}
