/**
 * PartitionPace enforces one partition's pace for one holder, in counting units:
 * - a token bucket (GCRA): at most `burst` at once, refilled at `capacity` per `windowMs`;
 * - an exact cap: at most `capacity` in any sliding window of `windowMs`.
 *
 * Together they bound what any window of length L holds: `min(capacity, burst + capacity × L /
 * windowMs)` (rule P1 of docs/guarantee.md). The bucket lets costs that do not divide a slice use
 * its fractional remainder (half units are not lost), the cap keeps every interval exact, and a
 * hand-over quiet time of `2 × burst / rate` (two slices) keeps two holders of the partition within
 * `capacity` in any window they share (rule H1).
 *
 * The cap keeps a log of charges; charges within `mergeMs` of an entry's first charge share that
 * entry, stamped with the latest of them, which bounds memory and only ever makes an entry expire
 * later (by at most `mergeMs`). Merging from the first charge matters: merging into whatever entry
 * was stamped last would let a steady stream of charges keep one entry from ever expiring.
 */
export class PartitionPace {
  /** Per log entry: the latest charge (when it leaves the window) and the first (when merging stops). */
  private times: number[] = [];
  private firsts: number[] = [];
  private amounts: number[] = [];
  private head = 0;
  private used = 0;
  /**
   * The bucket as a debt: `burst − debt` tokens at `debtAt`, refilled at `rate`. Counting units are
   * integers and refills are rounded down when the debt is re-based, so the bucket is exact and
   * only ever errs towards admitting less.
   */
  private debt = 0;
  private debtAt = -Infinity;
  /** Monotonic time of the last charge, -Infinity if none. */
  lastChargeAt = -Infinity;

  constructor(
    /** Counting units per window (the partition's share of an interval, after the rate factor). */
    public capacity: number,
    /** Counting units the bucket holds (one slice's share, after the rate factor). */
    public burst: number,
    /** The interval window in ms (`(intervalMs + jitterMs) × (1 + driftFactor)`). */
    readonly windowMs: number,
    /** Charges within this many ms of the previous one share its log entry. */
    readonly mergeMs: number,
  ) {}

  /** The bucket's refill rate in counting units per ms. */
  get rate(): number {
    return this.capacity / this.windowMs;
  }

  /** Counting units that may be charged at `now`. */
  available(now: number): number {
    this.expire(now);
    return Math.max(0, Math.min(this.burst - this.debtNow(now), this.capacity - this.used));
  }

  /** Charges `count` at `now`. The caller checked {@link available}. */
  charge(count: number, now: number): void {
    this.debt = this.debtNow(now) + count;
    this.debtAt = now;
    const last = this.times.length - 1;
    if (last >= this.head && now - this.firsts[last]! <= this.mergeMs) {
      this.times[last] = now;
      this.amounts[last]! += count;
    } else {
      this.times.push(now);
      this.firsts.push(now);
      this.amounts.push(count);
    }
    this.used += count;
    this.lastChargeAt = now;
  }

  /**
   * Sets new limits (a rate factor changed) keeping the tokens the bucket holds at `now`, at most
   * the new burst: a lower pace never inherits more than it allows.
   */
  setLimits(capacity: number, burst: number, now: number): void {
    const tokens = Math.min(burst, this.burst - this.debtNow(now));
    this.capacity = capacity;
    this.burst = burst;
    this.debt = burst - tokens;
    this.debtAt = now;
  }

  /** Tokens in the bucket at `t` ≥ now, unrounded, for admission-time estimates (never late). */
  tokensAt(t: number): number {
    const refill = this.debtAt === -Infinity ? Infinity : this.rate * (t - this.debtAt);
    return this.burst - Math.max(0, this.debt - refill);
  }

  /** When the bucket is full again (in the past when it is full now). */
  bucketFullAt(): number {
    return this.debt === 0 ? -Infinity : this.debtAt + this.debt / this.rate;
  }

  /**
   * What {@link available} will say at a future `t` ≥ now if nothing is charged before, without
   * changing the log: the same rounded-down refill, so that an estimate built on it is not early by
   * a fraction of a unit (a timer set on an unrounded estimate finds the bucket a hair short and
   * waits a retry: with one cost per slice that lost an eighth of every slice).
   */
  availableAt(t: number): number {
    let used = this.used;
    const cutoff = t - this.windowMs;
    for (let i = this.head; i < this.times.length && this.times[i]! <= cutoff; i++) used -= this.amounts[i]!;
    return Math.max(0, Math.min(this.burst - this.debtNow(t), this.capacity - used));
  }

  /** When everything charged so far has left the window and the bucket is full again. */
  freeAgainAt(): number {
    const last = this.times.length > this.head ? this.times[this.times.length - 1]! + this.windowMs : -Infinity;
    return Math.max(last, this.bucketFullAt());
  }

  /** The capped window's free room at `now`. */
  windowRoom(now: number): number {
    this.expire(now);
    return this.capacity - this.used;
  }

  /**
   * The log entries still in the window at `now`, oldest first, as a cursor: `releaseAt(i)` is
   * when entry i leaves the window and `amountAt(i)` what it frees, for i from the returned index
   * while `releaseAt(i)` is finite.
   */
  firstLive(now: number): number {
    this.expire(now);
    return this.head;
  }

  /** When log entry `i` leaves the window (Infinity past the end). */
  releaseAt(i: number): number {
    return i < this.times.length ? this.times[i]! + this.windowMs : Infinity;
  }

  /** What log entry `i` frees when it leaves the window. */
  amountAt(i: number): number {
    return this.amounts[i] ?? 0;
  }

  /** Counting units charged in the current window. */
  usedAt(now: number): number {
    this.expire(now);
    return this.used;
  }

  /** The bucket's debt at `now`: an integer, refills rounded down. */
  private debtNow(now: number): number {
    if (this.debt === 0 || this.debtAt === -Infinity) return 0;
    return Math.max(0, this.debt - Math.floor(this.rate * (now - this.debtAt)));
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
      this.firsts = [];
      this.amounts = [];
      this.head = 0;
      this.used = 0;
    } else if (head > 1024 && head * 2 > times.length) {
      this.times = times.slice(head);
      this.firsts = this.firsts.slice(head);
      this.amounts = this.amounts.slice(head);
      this.head = 0;
    } else {
      this.head = head;
    }
  }
}
