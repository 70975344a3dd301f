/**
 * A brand that survives two installed copies of this package: `instanceof` fails across copies,
 * the symbol registry does not.
 */
const BRAND = Symbol.for("partitioned-rate-limiter.error");

/**
 * PartitionedRateLimiterError is the base class of every error this library throws on purpose.
 * Each subclass has a stable `code`; use the static `is()` guards rather than `instanceof` when
 * two copies of the package may be installed.
 */
export abstract class PartitionedRateLimiterError extends Error {
  /** A stable, machine-readable code, e.g. `"ERR_CONFIG"`. */
  abstract readonly code: string;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    Object.defineProperty(this, BRAND, { value: true, enumerable: false });
  }

  /** Whether `value` is an error of this library (of any copy of it), optionally with `code`. */
  static isError(value: unknown, code?: string): value is PartitionedRateLimiterError {
    if (typeof value !== "object" || value === null) return false;
    if ((value as Record<symbol, unknown>)[BRAND] !== true) return false;
    return code === undefined || (value as { code?: unknown }).code === code;
  }
}
