/**
 * Units are counted as integers of `1 / scale` of a unit, so sums and comparisons in the pacer are
 * exact. The scale is chosen per plan: a millionth for ordinary limits, coarser for huge ones, so
 * that `limit × scale` stays below 2^52 (below 2^53 every integer is exact in a double). A cost is
 * rounded up to the next counting unit and is never less than one (a cost can never be admitted
 * without capacity); a capacity is rounded down.
 */

/** The finest counting unit: a millionth of a unit. */
export const MAX_UNIT_SCALE = 1_000_000;

/**
 * The counting scale for a plan with `limit`: the largest power of ten up to a million with
 * `limit × scale ≤ 2^52`. 1e6 for limits up to about 4.5e9, 1 for limits from about 4.5e14 to 2^50.
 */
export function unitScaleOf(limit: number): number {
  let scale = MAX_UNIT_SCALE;
  while (scale > 1 && limit * scale > 2 ** 52) scale /= 10;
  return scale;
}

/** A cost in counting units, rounded up, at least 1 (float noise below 1e-12 relative ignored). */
export function costToCount(cost: number, scale: number): number {
  const exact = cost * scale;
  return Math.max(1, Math.ceil(exact - Math.max(1e-6, exact * 1e-12)));
}

/** A capacity in counting units, rounded down. */
export function capacityToCount(capacity: number, scale: number): number {
  return Math.floor(capacity * scale);
}

/** Counting units back to units. */
export function countToUnits(count: number, scale: number): number {
  return count / scale;
}
