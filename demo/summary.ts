import { auditSlidingWindows } from "../test/support/audit.js";
import type { Arrival } from "./database.js";
import { PUBLISHED_COSMOS } from "./published-figures.js";

/** The figures of one run (limited or naive), as the summary table and `--json` show them. */
export interface RunSummary {
  readonly mode: "limited" | "naive";
  /** Writes that reached the database, rejected ones included (each record of a bulk request is one write). */
  readonly requestsSent: number;
  /** Of them, refused with 429. */
  readonly rejected429: number;
  /** Distinct records stored, and writes that repeated a stored record. */
  readonly recordsWritten: number;
  readonly duplicateWrites: number;
  /** First request to last accepted write, in seconds. */
  readonly timeToFinishS: number;
  /** The fastest the quota allows for this work (units / limit × interval), in seconds. */
  readonly idealS: number;
  /** Units written / (limit × elapsed intervals): how much of the quota the run used. */
  readonly quotaUtilisation: number;
  /** The exact sliding-window audit of every request that arrived (accepted or not). */
  readonly audit: { readonly overLimitWindows: number; readonly worstWindowRatio: number };
}

/** Computes a {@link RunSummary} from the database's arrivals of one run. */
export function summarise(
  mode: "limited" | "naive",
  arrivals: readonly Arrival[],
  written: { distinct: number; duplicates: number },
  quota: { limit: number; intervalMs: number },
  totalUnits: number,
): RunSummary {
  const first = arrivals[0]?.t ?? 0;
  let last = first;
  let acceptedUnits = 0;
  let rejected = 0;
  for (const a of arrivals) {
    if (a.accepted) {
      last = a.t;
      acceptedUnits += a.units;
    } else rejected++;
  }
  const elapsedMs = Math.max(1, last - first);
  const audit = auditSlidingWindows(arrivals.map((a) => ({ t: a.t, units: a.units })), quota.limit, quota.intervalMs);
  const idealS = (totalUnits / quota.limit) * (quota.intervalMs / 1000);
  return {
    mode,
    requestsSent: arrivals.length,
    rejected429: rejected,
    recordsWritten: written.distinct,
    duplicateWrites: written.duplicates,
    timeToFinishS: round(elapsedMs / 1000, 2),
    idealS: round(idealS, 2),
    quotaUtilisation: round(acceptedUnits / ((quota.limit * elapsedMs) / quota.intervalMs), 3),
    audit: { overLimitWindows: audit.overLimitWindows, worstWindowRatio: round(audit.worstRatio, 3) },
  };
}

/** The two runs side by side as a text table. */
export function formatTable(limited: RunSummary, naive: RunSummary): string {
  const rows: [string, string, string][] = [
    ["", "rate-limited", "naive (retry on 429)"],
    ["writes sent", String(limited.requestsSent), String(naive.requestsSent)],
    ["writes refused (429)", String(limited.rejected429), String(naive.rejected429)],
    ["records written", `${limited.recordsWritten} (+${limited.duplicateWrites} dup)`, `${naive.recordsWritten} (+${naive.duplicateWrites} dup)`],
    ["time to finish", `${limited.timeToFinishS} s (ideal ${limited.idealS} s)`, `${naive.timeToFinishS} s (ideal ${naive.idealS} s)`],
    ["quota utilisation", pct(limited.quotaUtilisation), pct(naive.quotaUtilisation)],
    ["arrivals over quota", windows(limited), windows(naive)],
  ];
  const w0 = Math.max(...rows.map((r) => r[0].length));
  const w1 = Math.max(...rows.map((r) => r[1].length));
  return rows.map((r) => `  ${r[0].padEnd(w0)}   ${r[1].padEnd(w1)}   ${r[2]}`).join("\n");
}

/** One pass of the naive cosmos run: records sent, rejected, and how long its requests took to arrive. */
export interface NaivePass {
  readonly sent: number;
  readonly rejected: number;
  /** First to last arrival of the pass at the database, in ms. */
  readonly arrivalSpanMs: number;
}

/**
 * The cosmos runs beside the figures the pattern publishes for the same example (30,000 sends and
 * 20,000 errors naive, 10,000 and 0 rate-limited), with the naive run pass by pass.
 */
export function formatPublishedComparison(limited: RunSummary, naive: RunSummary, passes: readonly NaivePass[]): string {
  const n = (x: number) => x.toLocaleString("en-US");
  const off = (x: number, of: number) => (of === 0 ? "" : ` (${x >= of ? "+" : ""}${(((x - of) / of) * 100).toFixed(1)}%)`);
  const published = PUBLISHED_COSMOS;
  const rows: [string, string, string][] = [
    ["", "published", "this run"],
    ["naive: records sent", n(published.naive.sent), n(naive.requestsSent) + off(naive.requestsSent, published.naive.sent)],
    ["naive: rejected (429)", n(published.naive.rejected), n(naive.rejected429) + off(naive.rejected429, published.naive.rejected)],
    ["rate-limited: records sent", n(published.limited.sent), n(limited.requestsSent)],
    ["rate-limited: rejected (429)", n(published.limited.rejected), n(limited.rejected429)],
  ];
  for (let i = 0; i < Math.max(passes.length, published.passes.length); i++) {
    const p = published.passes[i];
    const r = passes[i];
    rows.push([
      `naive pass ${i + 1}: sent / rejected`,
      p ? `${n(p.sent)} / ${n(p.rejected)}` : "-",
      r ? `${n(r.sent)} / ${n(r.rejected)} (arrived over ${(r.arrivalSpanMs / 1000).toFixed(2)} s)` : "-",
    ]);
  }
  const w0 = Math.max(...rows.map((r) => r[0].length));
  const w1 = Math.max(...rows.map((r) => r[1].length));
  return rows.map((r) => `  ${r[0].padEnd(w0)}   ${r[1].padEnd(w1)}   ${r[2]}`).join("\n");
}

function windows(s: RunSummary): string {
  return s.audit.overLimitWindows === 0
    ? `never (busiest window ${pct(s.audit.worstWindowRatio)} of quota)`
    : `${s.audit.overLimitWindows} windows (worst ${pct(s.audit.worstWindowRatio)})`;
}

function pct(x: number): string {
  return `${(x * 100).toFixed(1)}%`;
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
