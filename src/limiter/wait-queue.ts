/** Waiter is one pending `acquire()`: its cost, priority and how to settle it. */
export interface Waiter {
  readonly micro: number;
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
  private count = 0;
  private micro = 0;

  /** Waiters queued. */
  get length(): number {
    return this.count;
  }

  /** Micro-units queued. */
  get queuedMicro(): number {
    return this.micro;
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
    this.count++;
    this.micro += waiter.micro;
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
    this.count = 0;
    this.micro = 0;
    return all;
  }

  private account(waiter: Waiter): void {
    this.count--;
    this.micro -= waiter.micro;
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
