import type { HeldPartition } from "./held-partition.js";

/**
 * Pacer decides admissions from held partitions alone, in memory. A cost is charged to usable
 * partitions in a fixed order (oldest-held first, so the newest become idle and can be released),
 * split over several when one has too little room. Every decision re-checks each partition's local
 * deadline against `now`.
 */
export class Pacer {
  private held: HeldPartition[] = [];
  private pausedUntil = -Infinity;
  private rateFactor = 1;

  constructor(private readonly capacityPerSlice: number) {}

  /** The partitions held, oldest first. */
  get partitions(): readonly HeldPartition[] {
    return this.held;
  }

  /** Adds a newly acquired partition. */
  add(partition: HeldPartition): void {
    partition.window.capacity = this.effectiveCapacity();
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
  setRateFactor(factor: number): void {
    this.rateFactor = factor;
    const capacity = this.effectiveCapacity();
    for (const p of this.held) p.window.capacity = capacity;
  }

  /** The current rate factor. */
  get factor(): number {
    return this.rateFactor;
  }

  /** Charges `micro` at `now` if the usable partitions have room; false otherwise. */
  tryTake(micro: number, now: number): boolean {
    if (now < this.pausedUntil) return false;
    const held = this.held;
    // Fast path: one partition has room for the whole cost.
    let total = 0;
    for (let i = 0; i < held.length; i++) {
      const p = held[i]!;
      if (!p.usable(now)) continue;
      const room = p.window.available(now);
      if (room >= micro) {
        p.window.charge(micro, now);
        return true;
      }
      if (room > 0) total += room;
    }
    if (total < micro) return false;
    // Split the cost over partitions, oldest first.
    let remaining = micro;
    for (let i = 0; i < held.length && remaining > 0; i++) {
      const p = held[i]!;
      if (!p.usable(now)) continue;
      const room = p.window.available(now);
      if (room <= 0) continue;
      const take = Math.min(room, remaining);
      p.window.charge(take, now);
      remaining -= take;
    }
    return true;
  }

  /**
   * The earliest time ≥ now at which `micro` could be admitted on the partitions held now, or
   * Infinity if they can never hold that much. An estimate for timers only: the decision at that
   * time is re-checked, so an early estimate costs a retry and never an over-admission.
   */
  nextAdmissionAt(micro: number, now: number): number {
    const start = Math.max(now, this.pausedUntil);
    let total = 0;
    let perSlice = 0;
    const releases: Array<[number, number]> = [];
    for (const p of this.held) {
      if (!p.usable(start)) continue;
      perSlice += p.window.capacity;
      total += Math.max(0, p.window.available(start));
      for (const r of p.window.releases(start)) if (r[0] < p.validUntil) releases.push(r);
    }
    if (perSlice < micro) return Infinity;
    if (total >= micro) return start;
    releases.sort((a, b) => a[0] - b[0]);
    for (const [at, amount] of releases) {
      total += amount;
      if (total >= micro) return Math.max(start, at);
    }
    return Infinity;
  }

  private effectiveCapacity(): number {
    return Math.floor(this.capacityPerSlice * this.rateFactor);
  }
}
