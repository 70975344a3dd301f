/** Waiter is one pending `acquire()`: its cost, priority and how to settle it. */
export interface Waiter {
  /** The cost in units, as asked. */
  readonly cost: number;
  /** The cost in counting units of the current plan (recounted when a followed plan changes). */
  count: number;
  readonly priority: number;
  readonly enqueuedAt: number;
  resolve(): void;
  reject(reason: unknown): void;
  /** Frees the waiter's timer and abort listener; called exactly once when it leaves the queue. */
  cleanup(): void;
}

/**
 * WaitQueue orders waiters by priority (higher first), FIFO within a priority. It only orders;
 * bounds and policies are applied by the limiter.
 */
export class WaitQueue {
  /** Priority levels, highest first, each a FIFO with a head index. */
  private levels: Array<{ priority: number; items: Waiter[]; head: number }> = [];
  private waiters = 0;
  private counted = 0;
  private units = 0;

  /** Waiters queued. */
  get length(): number {
    return this.waiters;
  }

  /** Counting units queued. */
  get queuedCount(): number {
    return this.counted;
  }

  /** Units queued. */
  get queuedUnits(): number {
    return this.units;
  }

  /** Recounts every waiter's cost (the plan, and with it the counting scale, changed). */
  recount(toCount: (cost: number) => number): void {
    this.counted = 0;
    for (const level of this.levels) {
      for (let i = level.head; i < level.items.length; i++) {
        const waiter = level.items[i]!;
        waiter.count = toCount(waiter.cost);
        this.counted += waiter.count;
      }
    }
  }

  /** Adds a waiter behind others of its priority. */
  push(waiter: Waiter): void {
    let i = 0;
    while (i < this.levels.length && this.levels[i]!.priority > waiter.priority) i++;
    let level = this.levels[i];
    if (!level || level.priority !== waiter.priority) {
      level = { priority: waiter.priority, items: [], head: 0 };
      this.levels.splice(i, 0, level);
    }
    level.items.push(waiter);
    this.waiters++;
    this.counted += waiter.count;
    this.units += waiter.cost;
  }

  /** The next waiter to admit, without removing it. */
  peek(): Waiter | undefined {
    const level = this.levels[0];
    return level?.items[level.head];
  }

  /** Removes and returns the next waiter to admit. */
  shift(): Waiter | undefined {
    const level = this.levels[0];
    if (!level) return undefined;
    const waiter = level.items[level.head++];
    this.compact(0);
    if (waiter) this.account(waiter);
    return waiter;
  }

  /** The oldest waiter of the lowest priority: the one "drop-oldest" gives up first. */
  lowestOldest(): Waiter | undefined {
    const level = this.levels[this.levels.length - 1];
    return level?.items[level.head];
  }

  /** Removes a specific waiter (abort, timeout, drop); false if it was not queued. */
  remove(waiter: Waiter): boolean {
    for (let l = 0; l < this.levels.length; l++) {
      const level = this.levels[l]!;
      if (level.priority !== waiter.priority) continue;
      const i = level.items.indexOf(waiter, level.head);
      if (i < 0) return false;
      if (i === level.head) level.head++;
      else level.items.splice(i, 1);
      this.compact(l);
      this.account(waiter);
      return true;
    }
    return false;
  }

  /** Removes and returns every waiter, highest priority first. */
  drainAll(): Waiter[] {
    const all: Waiter[] = [];
    for (const level of this.levels) for (let i = level.head; i < level.items.length; i++) all.push(level.items[i]!);
    this.levels = [];
    this.waiters = 0;
    this.counted = 0;
    this.units = 0;
    return all;
  }

  private account(waiter: Waiter): void {
    this.waiters--;
    this.counted -= waiter.count;
    this.units = this.waiters === 0 ? 0 : this.units - waiter.cost;
  }

  private compact(index: number): void {
    const level = this.levels[index]!;
    if (level.head >= level.items.length) this.levels.splice(index, 1);
    else if (level.head > 1024 && level.head * 2 > level.items.length) {
      level.items = level.items.slice(level.head);
      level.head = 0;
    }
  }
}
