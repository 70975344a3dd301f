// No jest imports here: the recorders use it in worker-facing processes.

/**
 * QuotaWindow enforces a quota like a real throttled service: a request that would put more than
 * `limit` units into the window `(t - intervalMs, t]`, counting only accepted requests, is
 * refused. Exact (every accepted request is kept until it leaves the window).
 */
export class QuotaWindow {
  // Accepted requests still inside the window, oldest first.
  private accepted: { t: number; cost: number }[] = [];
  private units = 0;

  constructor(private readonly quota: { readonly limit: number; readonly intervalMs: number }) {}

  /**
   * Accepts `cost` units arriving at `t` (ms, monotonic, never decreasing) and returns null, or
   * refuses them and returns the ms until the oldest accepted request leaves the window (> 0).
   */
  admit(t: number, cost: number): number | null {
    while (this.accepted.length > 0 && this.accepted[0]!.t <= t - this.quota.intervalMs) this.units -= this.accepted.shift()!.cost;
    if (this.units + cost > this.quota.limit) return this.accepted[0]!.t + this.quota.intervalMs - t;
    this.accepted.push({ t, cost });
    this.units += cost;
    return null;
  }

  /** Forgets every accepted request. */
  reset(): void {
    this.accepted = [];
    this.units = 0;
  }
}
