import type { Clock, TimerHandle } from "../../src/contract/clock.js";
import type { VirtualClock } from "../../src/testing/virtual-clock.js";

interface Handle {
  underlying: TimerHandle | undefined;
  fn: () => void;
  cancelled: boolean;
}

/**
 * ProcessClock is one simulated process's view of a shared VirtualClock: it runs at its own rate
 * (clock drift), and can be paused (SIGSTOP: timers due meanwhile fire only at resume) or crashed
 * (timers never fire again).
 */
export class ProcessClock implements Clock {
  private pausedTimers: Handle[] | null = null;
  private crashed = false;
  private resumeWaiters: Array<() => void> = [];

  constructor(private readonly base: VirtualClock, private readonly rate = 1, private readonly offset = 0) {}

  now(): number {
    return this.base.now() * this.rate + this.offset;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const handle: Handle = { underlying: undefined, fn, cancelled: false };
    handle.underlying = this.base.setTimeout(() => this.fire(handle), Math.max(0, ms) / this.rate);
    return handle;
  }

  clearTimeout(handle: TimerHandle): void {
    const h = handle as Handle;
    if (!h || typeof h !== "object") return;
    h.cancelled = true;
    if (h.underlying !== undefined) this.base.clearTimeout(h.underlying);
  }

  /** Stops the process: nothing it scheduled runs until {@link resume}. */
  pause(): void {
    this.pausedTimers ??= [];
  }

  /** Continues the process: timers that came due during the pause fire now, in order. */
  resume(): void {
    const due = this.pausedTimers ?? [];
    this.pausedTimers = null;
    for (const h of due) if (!h.cancelled) h.fn();
    const waiters = this.resumeWaiters;
    this.resumeWaiters = [];
    for (const w of waiters) w();
  }

  /** Kills the process: nothing it scheduled ever runs again. */
  crash(): void {
    this.crashed = true;
    this.pausedTimers = null;
  }

  /** Whether the process is paused. */
  get isPaused(): boolean {
    return this.pausedTimers !== null;
  }

  /** Whether the process crashed. */
  get isCrashed(): boolean {
    return this.crashed;
  }

  /** Resolves when the process is running (immediately if it is). */
  running(): Promise<void> {
    if (!this.isPaused) return Promise.resolve();
    return new Promise((resolve) => this.resumeWaiters.push(resolve));
  }

  private fire(handle: Handle): void {
    if (handle.cancelled || this.crashed) return;
    if (this.pausedTimers) this.pausedTimers.push(handle);
    else handle.fn();
  }
}
