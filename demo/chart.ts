import type { Arrival } from "./database.js";
import { roundTicks, tickLabel } from "./ticks.js";

/** One panel of the chart: a run's arrivals and what to draw of them. */
export interface ChartPanel {
  readonly title: string;
  readonly arrivals: readonly Arrival[];
  /** Processors drawn as separate lines (accepted units per second). */
  readonly processors: readonly string[];
  /** The run's start on the arrivals' clock. */
  readonly startT: number;
  /** Also draw every request sent, rejected ones included. */
  readonly showSent: boolean;
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
const STEP_MS = 100;

/**
 * rateSeries samples, every 100 ms, the units that arrived in the trailing window of
 * `intervalMs`: exactly what the database's sliding window counts, so the quota line is the
 * bound the accepted line must stay under.
 */
export function rateSeries(arrivals: readonly Arrival[], startT: number, endT: number, intervalMs: number, keep: (a: Arrival) => boolean): number[] {
  const times = arrivals.filter(keep).map((a) => [a.t, a.units] as const);
  const out: number[] = [];
  let lo = 0;
  let hi = 0;
  let sum = 0;
  for (let t = startT; t <= endT + STEP_MS; t += STEP_MS) {
    while (hi < times.length && times[hi]![0] <= t) sum += times[hi++]![1];
    while (lo < hi && times[lo]![0] <= t - intervalMs) sum -= times[lo++]![1];
    out.push((sum * 1000) / intervalMs);
  }
  return out;
}

/**
 * renderChart draws each panel as a line chart of units per second over time (seconds since the
 * run started): one line per processor, their total, optionally everything sent, and the quota as
 * a dashed line. Plain SVG, no dependencies.
 */
export function renderChart(panels: readonly ChartPanel[], limit: number, intervalMs: number): string {
  const width = 900;
  const panelHeight = 300;
  const margin = { left: 72, right: 160, top: 34, bottom: 36 };
  const series = panels.map((p) => {
    const endT = p.arrivals.length ? p.arrivals[p.arrivals.length - 1]!.t : p.startT;
    const lines = p.processors.map((name, i) => ({
      name: `${name} accepted`,
      color: COLORS[i % COLORS.length]!,
      dash: "",
      values: rateSeries(p.arrivals, p.startT, endT, intervalMs, (a) => a.accepted && a.processor === name),
    }));
    lines.push({ name: "total accepted", color: "#333", dash: "", values: rateSeries(p.arrivals, p.startT, endT, intervalMs, (a) => a.accepted) });
    if (p.showSent) lines.push({ name: "total sent", color: "#ff7f0e", dash: "2 3", values: rateSeries(p.arrivals, p.startT, endT, intervalMs, () => true) });
    return { panel: p, lines, seconds: (endT - p.startT) / 1000 };
  });
  // One time axis for all panels, so runs compare at a glance; it ends on a round tick.
  const timeAxis = roundTicks(Math.max(1, ...series.map((s) => s.seconds)), 8);
  const maxSeconds = timeAxis.max;
  const quotaPerSecond = (limit * 1000) / intervalMs;
  const parts: string[] = [];
  series.forEach((s, index) => {
    const top = index * panelHeight;
    const plotW = width - margin.left - margin.right;
    const plotH = panelHeight - margin.top - margin.bottom;
    const valueAxis = roundTicks(Math.max(quotaPerSecond * 1.1, ...s.lines.flatMap((l) => l.values)), 5);
    const maxY = valueAxis.max;
    const x = (sec: number) => margin.left + (sec / maxSeconds) * plotW;
    const y = (v: number) => top + margin.top + plotH - (v / maxY) * plotH;
    parts.push(`<text x="${margin.left}" y="${top + 20}" font-size="15" font-weight="bold">${escape(s.panel.title)}</text>`);
    parts.push(`<rect x="${margin.left}" y="${top + margin.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#ccc"/>`);
    for (const v of valueAxis.ticks) {
      parts.push(`<line x1="${margin.left - 3}" x2="${margin.left}" y1="${y(v)}" y2="${y(v)}" stroke="#999"/>`);
      parts.push(`<text x="${margin.left - 6}" y="${y(v) + 4}" font-size="11" text-anchor="end">${tickLabel(v)}</text>`);
    }
    for (const sec of timeAxis.ticks) {
      parts.push(`<line x1="${x(sec)}" x2="${x(sec)}" y1="${top + margin.top + plotH}" y2="${top + margin.top + plotH + 3}" stroke="#999"/>`);
      parts.push(`<text x="${x(sec)}" y="${top + panelHeight - 18}" font-size="11" text-anchor="middle">${tickLabel(sec)} s</text>`);
    }
    parts.push(`<line x1="${margin.left}" x2="${margin.left + plotW}" y1="${y(quotaPerSecond)}" y2="${y(quotaPerSecond)}" stroke="#000" stroke-dasharray="8 4"/>`);
    // Inside the plot, above the line: beside it the label would collide with the legend.
    parts.push(`<text x="${margin.left + 6}" y="${y(quotaPerSecond) - 5}" font-size="12">quota ${quotaPerSecond}/s</text>`);
    s.lines.forEach((line, i) => {
      const points = line.values.map((v, k) => `${x((k * STEP_MS) / 1000).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
      parts.push(`<polyline fill="none" stroke="${line.color}" stroke-width="1.5"${line.dash ? ` stroke-dasharray="${line.dash}"` : ""} points="${points}"/>`);
      parts.push(`<text x="${margin.left + plotW + 8}" y="${top + margin.top + 40 + i * 16}" font-size="12" fill="${line.color}">${escape(line.name)}</text>`);
    });
    parts.push(`<text x="14" y="${top + margin.top + plotH / 2}" font-size="11" transform="rotate(-90 14 ${top + margin.top + plotH / 2})" text-anchor="middle">units per second (trailing ${intervalMs} ms window)</text>`);
  });
  const height = panelHeight * series.length;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">\n<rect width="100%" height="100%" fill="#fff"/>\n${parts.join("\n")}\n</svg>\n`;
}

function escape(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
