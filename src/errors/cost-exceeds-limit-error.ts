import { PartitionedRateLimiterError } from "./partitioned-rate-limiter-error.js";

/**
 * CostExceedsLimitError: a cost that can never be admitted, because it is larger than one slice
 * of the capacity this limiter may ever hold (`maxPartitions × limit / partitions /
 * slicesPerInterval`; with every partition, `limit / slicesPerInterval`).
 */
export class CostExceedsLimitError extends PartitionedRateLimiterError {
  readonly code = "ERR_COST_EXCEEDS_LIMIT" as const;
  /** The cost asked for. */
  readonly cost: number;
  /** The largest cost that can ever pass. */
  readonly maxCost: number;

  constructor(cost: number, maxCost: number) {
    super(
      `A cost of ${cost} can never be admitted: the most one admission may take is ${maxCost} ` +
        `(limit / partitions × maxPartitions / slicesPerInterval). Split the work, or use fewer ` +
        `slicesPerInterval or a larger maxPartitions.`,
    );
    this.cost = cost;
    this.maxCost = maxCost;
  }

  /** Whether `value` is a CostExceedsLimitError (from any copy of this package). */
  static is(value: unknown): value is CostExceedsLimitError {
    return PartitionedRateLimiterError.isError(value, "ERR_COST_EXCEEDS_LIMIT");
  }
}
