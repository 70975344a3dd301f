import { PartitionedRateLimiterError } from "./partitioned-rate-limiter-error.js";

/**
 * ConfigError is thrown for an option or argument a caller got wrong. The message names the
 * option, the value given and what is allowed; the same facts are fields for programs.
 */
export class ConfigError extends PartitionedRateLimiterError {
  readonly code = "ERR_CONFIG" as const;
  /** The option or argument, e.g. `"limit"` or `"acquire(cost)"`. */
  readonly option: string;
  /** What was given. */
  readonly value: unknown;
  /** What is allowed, in words, e.g. `"a finite number > 0"`. */
  readonly allowed: string;

  constructor(option: string, value: unknown, allowed: string, detail?: string) {
    super(
      `Invalid ${option}: expected ${allowed}, got ${describeValue(value)}` +
        (detail ? ` (${detail})` : ""),
    );
    this.option = option;
    this.value = value;
    this.allowed = allowed;
  }

  /** Whether `value` is a ConfigError (from any copy of this package). */
  static is(value: unknown): value is ConfigError {
    return PartitionedRateLimiterError.isError(value, "ERR_CONFIG");
  }
}

/** Renders a value for an error message: its type and a short form of it. */
export function describeValue(value: unknown): string {
  if (typeof value === "string") {
    const shown = value.length > 60 ? `${value.slice(0, 60)}…` : value;
    return `string ${JSON.stringify(shown)}${value.length > 60 ? ` (${value.length} chars)` : ""}`;
  }
  if (typeof value === "number") return `number ${String(value)}`;
  if (typeof value === "bigint") return `bigint ${String(value)}n`;
  if (value === null) return "null";
  if (value === undefined) return "undefined";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "function") return "a function";
  return typeof value === "object" ? "an object" : `${typeof value} ${String(value)}`;
}
