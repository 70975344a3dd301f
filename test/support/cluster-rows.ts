import type { Arrival } from "./recorder.js";
import type { RowResult } from "./fault-matrix.js";
import type { WorkerGroup } from "./workers.js";

// No jest imports here: the cluster fault rows (test/faults/*-cluster-*.test.ts, *-sentinel-*) assert on what it returns.

/** One sample of what the live workers hold, on the recorder's timeline. */
interface HeldSample {
  readonly at: number;
  readonly held: number;
}

/**
 * HeldTimeline records, from every stats report, how many partitions the live workers hold
 * together, so a row can say when capacity dropped after a server fault and when it was whole again.
 */
export class HeldTimeline {
  private readonly samples: HeldSample[] = [];
  private readonly off: () => void;

  constructor(private readonly group: WorkerGroup) {
    this.off = group.onStats((_, __, at) => this.samples.push({ at, held: group.heldPartitions() }));
  }

  /** Stops recording. */
  stop(): void {
    this.off();
  }

  /** The fewest partitions held at any report in [from, to). */
  minHeld(from: number, to = Infinity): number {
    let min = Infinity;
    for (const s of this.samples) if (s.at >= from && s.at < to) min = Math.min(min, s.held);
    return min === Infinity ? this.group.heldPartitions() : min;
  }

  /**
   * From `from`: null if the live workers never held fewer than `partitions` afterwards (no
   * takeover was needed); else the time from `from` until they held all `partitions` again after
   * the last drop (Infinity if they never did).
   */
  takeoverMs(from: number, partitions: number): number | null {
    const after = this.samples.filter((s) => s.at >= from);
    if (!after.some((s) => s.held < partitions)) return null;
    let lastShort = -1;
    for (let i = 0; i < after.length; i++) if (after[i]!.held < partitions) lastShort = i;
    const whole = after.slice(lastShort + 1).find((s) => s.held === partitions);
    return whole ? whole.at - from : Infinity;
  }
}

/**
 * From `from` (a fault): null if every full `intervalMs` window starting in [from, end − intervalMs]
 * (stepped by 10 ms) received at least `share` of `limit` (the rate never dipped); else the time
 * from `from` to the start of the first such window at or above `share` after the first one below
 * it (Infinity if the rate never came back before `end`).
 */
export function rateBackMs(arrivals: readonly Arrival[], from: number, end: number, limit: number, intervalMs: number, share = 0.9): number | null {
  const sorted = arrivals.filter((a) => a.t >= from).sort((a, b) => a.t - b.t);
  let head = 0;
  let tail = 0;
  let units = 0;
  let dipped = false;
  for (let s = from; s + intervalMs <= end; s += 10) {
    while (tail < sorted.length && sorted[tail]!.t < s + intervalMs) units += sorted[tail++]!.cost;
    while (head < tail && sorted[head]!.t < s) units -= sorted[head++]!.cost;
    if (units < share * limit) dipped = true;
    else if (dipped) return s - from;
  }
  return dipped ? Infinity : null;
}

/** Units that arrived in [from, to) as a share of `limit` per `intervalMs` over that span. */
export function utilisationOf(arrivals: readonly Arrival[], from: number, to: number, limit: number, intervalMs: number): number {
  let units = 0;
  for (const a of arrivals) if (a.t >= from && a.t < to) units += a.cost;
  return units / ((limit * (to - from)) / intervalMs);
}

/** The best share of the limit a limiter with `jitterMs` can reach (driftFactor 0.001), as in the integration tests. */
export function pacedCeiling(intervalMs: number, jitterMs: number): number {
  return intervalMs / ((intervalMs + jitterMs) * 1.001);
}

/** The figures of one cluster row. Times are in ms. */
export interface ClusterRowFigures {
  /** See {@link HeldTimeline.takeoverMs}; null: no partition was lost, nothing to take over. */
  readonly takeoverMs: number | null;
  /** The fewest partitions the live workers held from the fault on. */
  readonly minHeld: number;
  /** From the fault to the first 1-interval window with ≥ 90% of the limit after a dip below it; null: no dip (see {@link rateBackMs}). */
  readonly rateBackMs: number | null;
  /** Share of the limit that arrived over the row's closing measurement span. */
  readonly tailUtilisation: number;
  /** Backend calls that failed, all workers together (their final stats). */
  readonly backendErrors: number;
}

/**
 * ClusterReport collects one README-ready table row per cluster fault:
 * `| backend | fault | windows over (arrival / admission) | worst window | takeover | rate back ≥ 90% | utilisation after | backend errors | requests lost |`.
 */
export class ClusterReport {
  private readonly rows: string[] = [];

  constructor(private readonly heading: string) {}

  add(backend: string, fault: string, result: RowResult, f: ClusterRowFigures): string {
    const ms = (v: number | null, none: string) => (v === null ? none : v === Infinity ? "never" : `${(v / 1000).toFixed(1)} s`);
    const row =
      `| ${backend} | ${fault} | ${result.audit.overLimitWindows} / ${result.sendAudit.overLimitWindows} | ${(result.audit.worstRatio * 100).toFixed(1)}% | ` +
      `${ms(f.takeoverMs, "none needed")} (min held ${f.minHeld}) | ${ms(f.rateBackMs, "no dip")} | ${(f.tailUtilisation * 100).toFixed(1)}% | ${f.backendErrors} | ${result.lost} |`;
    this.rows.push(row);
    return row;
  }

  /** The heading, the column names and every row, or "" when none was added. */
  table(): string {
    if (this.rows.length === 0) return "";
    return (
      `${this.heading}\n| backend | fault | windows over (arrival / admission) | worst window | takeover | rate back ≥ 90% | utilisation after | backend errors | requests lost |\n` +
      `|---|---|---|---|---|---|---|---|---|\n${this.rows.join("\n")}\n`
    );
  }
}
