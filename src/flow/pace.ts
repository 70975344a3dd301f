import { ConfigError } from "../errors/config-error.js";
import type { PartitionedRateLimiter } from "../limiter/partitioned-rate-limiter.js";
import { optionalSignal } from "../contract/validate.js";

/** PaceOptions are the options of {@link pace} and `createPacingTransform`. */
export interface PaceOptions<T> {
  /** Admits each item. */
  limiter: PartitionedRateLimiter;
  /** Units per item: a number or a function of the item. Default 1. */
  cost?: number | ((item: T) => number);
  /** Ends the wait for admission at once; the iteration then throws `signal.reason`. */
  signal?: AbortSignal;
  /** Limiter queue priority of each item. Default 0. */
  priority?: number;
}

/** costOf validates a per-item cost option and returns a function giving each item's cost. */
export function costOf<T>(where: string, cost: PaceOptions<T>["cost"]): (item: T) => number {
  if (cost === undefined) return () => 1;
  if (typeof cost === "function") return cost;
  if (typeof cost !== "number" || !(cost > 0) || cost === Infinity) throw new ConfigError(`${where}(options.cost)`, cost, "a finite number > 0 or a function of the item");
  return () => cost;
}

/**
 * pace yields the items of `source` only as the limiter admits them, pulling the source no
 * faster: it reads one item (its cost may depend on it), waits for its admission, yields it, and
 * reads the next only when the consumer asks. So at most one item is read ahead, and an endless
 * or huge source is never buffered. Breaking out of the loop returns (closes) the source; an
 * abort or a limiter error (e.g. closed) is thrown from the loop after closing the source.
 */
export async function* pace<T>(source: AsyncIterable<T> | Iterable<T>, options: PaceOptions<T>): AsyncGenerator<T, void, undefined> {
  if (typeof options !== "object" || options === null) throw new ConfigError("pace(options)", options, "an options object");
  const { limiter } = options;
  if (typeof limiter?.acquire !== "function") throw new ConfigError("pace(options.limiter)", limiter, "a PartitionedRateLimiter");
  const signal = optionalSignal("pace(options.signal)", options.signal);
  const cost = costOf("pace", options.cost);
  const priority = options.priority ?? 0;
  // for-await calls the source's return() when this generator is returned or throws.
  for await (const item of source) {
    await limiter.acquire(cost(item), { signal, priority });
    yield item;
  }
}
