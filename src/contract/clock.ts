import { performance } from "node:perf_hooks";

/** An opaque timer handle returned by {@link Clock.setTimeout}. */
export type TimerHandle = unknown;

/**
 * Clock is the limiter's only source of time. `now()` must be monotonic (never goes back, not
 * moved by wall-clock changes); deadlines and pacing windows are computed from it alone.
 * Inject a {@link VirtualClock} in tests to run on virtual time.
 */
export interface Clock {
  /** Monotonic time in milliseconds (any origin). */
  now(): number;
  /**
   * Calls `fn` after `ms` milliseconds. `keepAlive: false` lets the process exit while only this
   * timer is pending (the limiter uses it for housekeeping that must not hold a process open).
   */
  setTimeout(fn: () => void, ms: number, keepAlive?: boolean): TimerHandle;
  /** Cancels a timer from {@link Clock.setTimeout}; unknown or fired handles are ignored. */
  clearTimeout(handle: TimerHandle): void;
}

/** systemClock: `performance.now()` and Node timers. The default clock. */
export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout(fn, ms, keepAlive = true) {
    const timer = setTimeout(fn, Math.max(0, ms));
    if (!keepAlive) timer.unref();
    return timer;
  },
  clearTimeout(handle) {
    clearTimeout(handle as ReturnType<typeof setTimeout>);
  },
};
