/** An axis with round ticks, from {@link roundTicks}. */
export interface RoundAxis {
  /** The tick values, from 0 up to and including `max`, `step` apart. */
  readonly ticks: readonly number[];
  /** The distance between ticks: 1, 2 or 5 × 10^n. */
  readonly step: number;
  /** The axis end: the first tick at or above the data's maximum. */
  readonly max: number;
}

/**
 * roundStep is the smallest 1, 2 or 5 × 10^n that is at least `rough` (> 0): a step a reader
 * counts in without thinking (…, 0.5, 1, 2, 5, 10, 20, 50, …).
 */
export function roundStep(rough: number): number {
  if (!(rough > 0) || !Number.isFinite(rough)) throw new RangeError(`roundStep: expected a finite number > 0, got ${rough}`);
  const power = 10 ** Math.floor(Math.log10(rough));
  for (const m of [1, 2, 5, 10]) {
    // A relative epsilon: log10 and the multiplication round, and 3 must not become 3.0000000001.
    if (m * power >= rough * (1 - 1e-12)) return clean(m * power);
  }
  return clean(10 * power);
}

/**
 * roundTicks lays out an axis from 0 to at least `dataMax` with at most `maxTicks` intervals
 * (default 5), each a round step (see {@link roundStep}), ending on a tick.
 */
export function roundTicks(dataMax: number, maxTicks = 5): RoundAxis {
  const top = dataMax > 0 && Number.isFinite(dataMax) ? dataMax : 1;
  const step = roundStep(top / maxTicks);
  const count = Math.ceil(top / step - 1e-9);
  const ticks = Array.from({ length: count + 1 }, (_, i) => clean(i * step));
  return { ticks, step, max: ticks[ticks.length - 1]! };
}

/** A tick label: the value without float noise, thousands grouped (`20,000`, `2.5`). */
export function tickLabel(value: number): string {
  return value.toLocaleString("en-US", { maximumFractionDigits: 6 });
}

/** Removes binary float noise (0.30000000000000004 → 0.3), keeping 12 significant digits. */
function clean(x: number): number {
  return Number(x.toPrecision(12));
}
