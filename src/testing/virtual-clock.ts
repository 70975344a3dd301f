import type { Clock, TimerHandle } from "../contract/clock.js";

interface VirtualTimer {
  id: number;
  at: number;
  fn: () => void;
}

/**
 * VirtualClock is a {@link Clock} whose time moves only when told to, for deterministic tests.
 * `advance(ms)` fires due timers in time order (ties in creation order) and lets promise
 * callbacks settle between them, so async code driven by timers runs as it would in real time.
 */
export class VirtualClock implements Clock {
  private current: number;
  private nextId = 1;
  private timers: VirtualTimer[] = [];

  /** Starts at `start` ms (default 0). */
  constructor(start = 0) {
    this.current = start;
  }

  /** The current virtual time in ms. */
  now(): number {
    return this.current;
  }

  /** Schedules `fn` at now + `ms` virtual ms. */
  setTimeout(fn: () => void, ms: number): TimerHandle {
    const timer: VirtualTimer = { id: this.nextId++, at: this.current + Math.max(0, ms), fn };
    // Keep the list sorted by (at, id): insertion from the back is cheap for near-future timers.
    let i = this.timers.length;
    while (i > 0 && this.timers[i - 1]!.at > timer.at) i--;
    this.timers.splice(i, 0, timer);
    return timer.id;
  }

  /** Cancels a timer. */
  clearTimeout(handle: TimerHandle): void {
    const i = this.timers.findIndex((t) => t.id === handle);
    if (i >= 0) this.timers.splice(i, 1);
  }

  /** Number of pending timers (tests use it to prove nothing is left behind). */
  get pendingTimers(): number {
    return this.timers.length;
  }

  /**
   * Moves time forward by `ms`, firing every timer due on the way at its own time, and settling
   * promise callbacks after each one. Throws when 100,000 timers fire without time moving: code
   * that keeps re-arming a timer for "now" would otherwise hang the test instead of failing it.
   */
  async advance(ms: number): Promise<void> {
    const target = this.current + ms;
    await settle();
    let sameInstant = 0;
    for (;;) {
      const next = this.timers[0];
      if (next === undefined || next.at > target) break;
      this.timers.shift();
      sameInstant = next.at > this.current ? 0 : sameInstant + 1;
      if (sameInstant > 100_000) throw new Error(`VirtualClock: 100,000 timers fired at ${this.current} ms without time moving (a timer spin)`);
      this.current = Math.max(this.current, next.at);
      next.fn();
      await settle();
    }
    this.current = target;
    await settle();
  }

  /** Moves time forward to absolute time `t` (no-op if already past). */
  async advanceTo(t: number): Promise<void> {
    if (t > this.current) await this.advance(t - this.current);
  }
}

/** Lets pending promise callbacks (and the ones they schedule) run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}
