/** One admission or arrival: when (ms, any monotonic origin) and how many units. */
export interface AuditEvent {
  t: number;
  units: number;
  /**
   * The limit of the plan it was admitted under, when plans change during a run: a window holding
   * admissions of several plans is audited against the lowest of their limits (the limit in force
   * while both may be live). Default: the audit's `limit`.
   */
  limit?: number;
}

/** The result of {@link auditSlidingWindows}. */
export interface AuditResult {
  /** Windows (one starting at each event) whose units exceed the limit. */
  overLimitWindows: number;
  /** The most units in any window, as a ratio of the limit. */
  worstRatio: number;
  /** Where the worst window starts. */
  worstAt: number;
  /** Units in all. */
  totalUnits: number;
  events: number;
}

/**
 * Checks every sliding window [t, t + intervalMs) exactly: the maximum of such a step function
 * is reached at a window that starts at an event, so one window per event suffices. Units are
 * counted as integers of 1/`resolution` (costs must be multiples of it), so there is no rounding
 * slack: zero tolerance.
 */
export function auditSlidingWindows(events: readonly AuditEvent[], limit: number, intervalMs: number, resolution = 1000): AuditResult {
  const sorted = [...events].sort((a, b) => a.t - b.t);
  const units = sorted.map((e) => {
    const scaled = Math.round(e.units * resolution);
    if (Math.abs(scaled - e.units * resolution) > 1e-6) throw new Error(`audit: cost ${e.units} is not a multiple of 1/${resolution}`);
    return scaled;
  });
  const caps = sorted.map((e) => Math.round((e.limit ?? limit) * resolution));
  // The caps of the events in the window, to find the lowest in force.
  const inWindow = new Map<number, number>();
  const enter = (cap: number, d: number) => {
    const n = (inWindow.get(cap) ?? 0) + d;
    if (n === 0) inWindow.delete(cap);
    else inWindow.set(cap, n);
  };
  let over = 0;
  let worst = 0;
  let worstAt = sorted[0]?.t ?? 0;
  let sum = 0;
  let end = 0;
  for (let start = 0; start < sorted.length; start++) {
    while (end < sorted.length && sorted[end]!.t < sorted[start]!.t + intervalMs) {
      sum += units[end]!;
      enter(caps[end]!, 1);
      end++;
    }
    if (start === 0 || sorted[start]!.t !== sorted[start - 1]!.t) {
      const cap = Math.min(...inWindow.keys());
      if (sum > cap) over++;
      if (sum / cap > worst) {
        worst = sum / cap;
        worstAt = sorted[start]!.t;
      }
    }
    sum -= units[start]!;
    enter(caps[start]!, -1);
  }
  return {
    overLimitWindows: over,
    worstRatio: worst,
    worstAt,
    totalUnits: units.reduce((a, b) => a + b, 0) / resolution,
    events: sorted.length,
  };
}
