/**
 * Units are counted as integers of one millionth, so sums and comparisons in the pacer are exact.
 * A cost is rounded up to the next millionth (never charged less than asked, beyond float noise);
 * a capacity is rounded down.
 */
export const UNIT_SCALE = 1_000_000;

/** A cost in integer micro-units, rounded up (float noise below 1e-12 units ignored). */
export function costToMicro(cost: number): number {
  return Math.ceil(cost * UNIT_SCALE - 1e-6);
}

/** A capacity in integer micro-units, rounded down. */
export function capacityToMicro(capacity: number): number {
  return Math.floor(capacity * UNIT_SCALE);
}

/** Micro-units back to units. */
export function microToUnits(micro: number): number {
  return micro / UNIT_SCALE;
}
