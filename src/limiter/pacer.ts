import type { HeldPartition } from "./held-partition.js";
import { PartitionPace } from "./partition-pace.js";

/**
 * Pacer decides admissions from held partitions alone, in memory. A cost is charged to usable
 * partitions in a fixed order (oldest-held first, so the newest become idle and can be released),
 * split over several when one has too little room. Every decision re-checks each partition's local
 * deadline against `now`. Each partition is paced by its own {@link PartitionPace}.
 */
export class Pacer {
  private held: HeldPartition[] = [];
  private pausedUntil = -Infinity;
  private rateFactor = 1;

  /**
   * `perInterval`: counting units one partition admits per interval window; `perSlice`: its
   * burst, one slice's share.
   */
  constructor(private perInterval: number, private perSlice: number) {}

  /** Sets the limits of partitions added from now on (a followed plan changed). */
  setLimits(perInterval: number, perSlice: number): void {
    this.perInterval = perInterval;
    this.perSlice = perSlice;
  }

  /** The partitions held, oldest first. */
  get partitions(): readonly HeldPartition[] {
    return this.held;
  }

  /** A pace for a newly acquired partition: the limits in force, a full bucket, an empty history. */
  newPace(windowMs: number, mergeMs: number): PartitionPace {
    return new PartitionPace(this.capacity(), this.burst(), windowMs, mergeMs);
  }

  /** Adds a newly acquired partition (its pace from {@link newPace}). */
  add(partition: HeldPartition): void {
    this.held.push(partition);
  }

  /** Removes a partition (lost, released). */
  remove(partition: HeldPartition): void {
    const i = this.held.indexOf(partition);
    if (i >= 0) this.held.splice(i, 1);
  }

  /** Admissions wait until `until` (monotonic ms), e.g. for a Retry-After. */
  pauseUntil(until: number): void {
    this.pausedUntil = Math.max(this.pausedUntil, until);
  }

  /** Monotonic time until which admissions are paused. */
  get pauseEnd(): number {
    return this.pausedUntil;
  }

  /** Scales every partition's pace by `factor` (0 < factor ≤ 1), for adaptive slow-down. */
  setRateFactor(factor: number, now: number): void {
    this.rateFactor = factor;
    for (const p of this.held) p.pace.setLimits(this.capacity(), this.burst(), now);
  }

  /** The current rate factor. */
  get factor(): number {
    return this.rateFactor;
  }

  /** Charges `count` counting units at `now` if the usable partitions have room; false otherwise. */
  tryTake(count: number, now: number): boolean {
    if (now < this.pausedUntil) return false;
    const held = this.held;
    // Fast path: one partition has room for the whole cost.
    let total = 0;
    for (let i = 0; i < held.length; i++) {
      const p = held[i]!;
      if (!p.usable(now)) continue;
      const room = p.pace.available(now);
      if (room >= count) {
        p.pace.charge(count, now);
        return true;
      }
      if (room > 0) total += room;
    }
    if (total < count) return false;
    // Split the cost over partitions, oldest first.
    let remaining = count;
    for (let i = 0; i < held.length && remaining > 0; i++) {
      const p = held[i]!;
      if (!p.usable(now)) continue;
      const room = p.pace.available(now);
      if (room <= 0) continue;
      const take = Math.min(room, remaining);
      p.pace.charge(take, now);
      remaining -= take;
    }
    return true;
  }

  /**
   * An estimate of the earliest time ≥ now at which `count` counting units could be admitted on
   * the partitions held now, or Infinity if they can never hold that much at once. For timers
   * only: the decision at that time is re-checked, so an early estimate costs a retry and never an
   * over-admission. It starts from a cheap lower bound (when the buckets alone, and the capped
   * windows alone, would allow it) and searches forward from there, since a partition whose bucket
   * is full while its window is not (or the reverse) can leave the sum short for a while.
   */
  nextAdmissionAt(count: number, now: number): number {
    const start = Math.max(now, this.pausedUntil);
    const usable = this.held.filter((p) => p.usable(start));
    let most = 0;
    let room = 0;
    let freeAt = start;
    for (const p of usable) {
      most += Math.min(p.pace.capacity, p.pace.burst);
      room += p.pace.available(start);
      freeAt = Math.max(freeAt, p.pace.freeAgainAt());
    }
    if (most < count) return Infinity;
    if (room >= count) return start;
    const fits = (t: number): boolean => {
      let sum = 0;
      for (const p of usable) sum += p.pace.availableAt(t);
      return sum + ROUNDING >= count;
    };
    let lo = Math.max(bucketsAllow(usable, count, start), windowsAllow(usable, count, start));
    if (!Number.isFinite(lo) || lo >= freeAt) return Math.min(lo, freeAt);
    if (fits(lo)) return lo;
    // Exponential search for a time that fits (freeAt always does), then bisection.
    let step = 0.05;
    let hi = Math.min(lo + step, freeAt);
    while (!fits(hi)) {
      lo = hi;
      step *= 2;
      hi = Math.min(lo + step, freeAt);
      if (lo >= freeAt) return freeAt;
    }
    for (let i = 0; i < 24 && hi - lo > 0.05; i++) {
      const mid = (lo + hi) / 2;
      if (fits(mid)) hi = mid;
      else lo = mid;
    }
    return hi;
  }

  /**
   * ms from `now` until the first usable partition whose bucket is refilling is full again
   * (Infinity when none is refilling): a timer set later than that wastes that partition's refill.
   */
  fullBucketLeadMs(now: number): number {
    let first = Infinity;
    for (const p of this.held) {
      if (!p.usable(now)) continue;
      const full = p.pace.bucketFullAt();
      if (full > now) first = Math.min(first, full - now);
    }
    return first;
  }

  private capacity(): number {
    return Math.floor(this.perInterval * this.rateFactor);
  }

  private burst(): number {
    return Math.floor(this.perSlice * this.rateFactor);
  }
}

/**
 * Counting units are integers: a sum of unrounded refills within this of a whole count has reached
 * it (a bucket refilled to exactly the cost must not look a millionth short, or never).
 */
const ROUNDING = 1e-6;

/** The earliest t ≥ start at which the buckets together hold `count` (piecewise linear in t). */
function bucketsAllow(partitions: readonly HeldPartition[], count: number, start: number): number {
  const paces = partitions.map((p) => p.pace);
  let tokens = 0;
  let slope = 0;
  const fullAt: Array<[number, number]> = [];
  for (const pace of paces) {
    tokens += pace.tokensAt(start);
    const full = pace.bucketFullAt();
    if (full > start) {
      slope += pace.rate;
      fullAt.push([full, pace.rate]);
    }
  }
  fullAt.sort((a, b) => a[0] - b[0]);
  let t = start;
  for (const [full, rate] of fullAt) {
    const reached = tokens + slope * (full - t);
    if (reached + ROUNDING >= count) return Math.min(full, t + (count - tokens) / slope);
    tokens = reached;
    t = full;
    slope -= rate;
  }
  return tokens + ROUNDING >= count ? t : Infinity;
}

/**
 * The earliest t ≥ start at which the capped windows together have room for `count`. Releases past
 * a partition's current deadline count too: an interval window is often longer than what is left
 * of a lease, and a renewal (the usual case) moves the deadline before then; if none does, the
 * decision at that time finds the partition unusable and looks again.
 */
function windowsAllow(partitions: readonly HeldPartition[], count: number, start: number): number {
  let room = 0;
  const paces = partitions.map((p) => p.pace);
  const cursors = paces.map((pace) => pace.firstLive(start));
  for (const pace of paces) room += Math.max(0, pace.windowRoom(start));
  // Merge the partitions' logs (each in time order) only as far as needed.
  while (room < count) {
    let best = -1;
    let at = Infinity;
    for (let i = 0; i < paces.length; i++) {
      const t = paces[i]!.releaseAt(cursors[i]!);
      if (t < at) {
        at = t;
        best = i;
      }
    }
    if (best < 0) return Infinity;
    room += paces[best]!.amountAt(cursors[best]!);
    cursors[best]!++;
    if (room >= count) return Math.max(start, at);
  }
  return start;
}
