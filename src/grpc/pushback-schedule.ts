/** The state of the limiter when a call is shed, as {@link PushbackSchedule.next} needs it. */
export interface BacklogSnapshot {
  /** The shed call's cost in units. */
  readonly cost: number;
  /** Units queued in the limiter now. */
  readonly queuedUnits: number;
  /** Units per interval the limiter holds now, after its rate factor. */
  readonly capacity: number;
  /** ms left of a pause (a Retry-After the limiter was told), 0 if none. */
  readonly pausedForMs: number;
}

/**
 * PushbackSchedule tells shed callers when to come back so that they return at the held pace:
 * the first after the limiter's backlog (its pause plus its queued units at the held pace), each
 * next one after the units already promised to those shed before it. A burst of shed calls is so
 * told different times and comes back spread out, rather than all at once. The same schedule as
 * the HTTP load shedder's Retry-After, in ms instead of whole seconds.
 */
export class PushbackSchedule {
  // Monotonic time up to which the held pace is already promised to callers told to come back.
  private promisedUntil = -Infinity;

  /**
   * @param intervalMs the limiter's interval (capacity is units per this many ms)
   * @param maxMs the longest pushback ever given, in ms
   */
  constructor(
    private readonly intervalMs: number,
    private readonly maxMs: number,
  ) {}

  /**
   * The pushback for one shed call at monotonic time `now` (ms), rounded up to whole ms, at least
   * 1 and at most `maxMs`. With no capacity held yet (leases still being taken) it is one interval.
   */
  next(backlog: BacklogSnapshot, now: number): number {
    const perMs = backlog.capacity / this.intervalMs;
    if (!(perMs > 0)) return Math.min(this.maxMs, Math.max(1, Math.ceil(this.intervalMs)));
    const start = Math.max(now + backlog.pausedForMs + backlog.queuedUnits / perMs, this.promisedUntil);
    this.promisedUntil = Math.min(start + backlog.cost / perMs, now + this.maxMs);
    return Math.min(this.maxMs, Math.max(1, Math.ceil(this.promisedUntil - now)));
  }
}
