import { ConfigError } from "../errors/config-error.js";

/** A range of numbers: bounds (inclusive unless `minExclusive`) and whether only integers count. */
export interface NumberRange {
  /** Lowest allowed value. Default: no lower bound. */
  readonly min?: number;
  /** Highest allowed value. Default: no upper bound. */
  readonly max?: number;
  /** `min` itself is not allowed. Default false. */
  readonly minExclusive?: boolean;
  /** Only integers are allowed. Default false. */
  readonly integer?: boolean;
}

/**
 * Whether `value` is a finite number within `range`. The one range check: options here, command
 * line arguments in src/cli (which describe the range in their own words).
 */
export function inRange(value: number, { min = -Infinity, max = Infinity, minExclusive = false, integer = false }: NumberRange): boolean {
  if (!Number.isFinite(value) || (integer && !Number.isInteger(value))) return false;
  return (minExclusive ? value > min : value >= min) && value <= max;
}

/** Throws ConfigError unless `value` is a finite number within `range`. */
export function finiteNumber(option: string, value: unknown, range: NumberRange = {}): number {
  if (typeof value !== "number" || !inRange(value, range)) throw new ConfigError(option, value, describeRange(range));
  return value;
}

/** Like {@link finiteNumber}, but `undefined` gives `fallback`. */
export function optionalNumber(option: string, value: unknown, fallback: number, range: NumberRange = {}): number {
  return value === undefined ? fallback : finiteNumber(option, value, range);
}

function describeRange({ min = -Infinity, max = Infinity, minExclusive = false, integer = false }: NumberRange): string {
  const kind = integer ? "an integer" : "a finite number";
  const parts: string[] = [];
  if (min !== -Infinity) parts.push(`${minExclusive ? ">" : ">="} ${min}`);
  if (max !== Infinity) parts.push(`<= ${max}`);
  return parts.length ? `${kind} ${parts.join(" and ")}` : kind;
}

/** Resource names: letters, digits, `.`, `_`, `-`, starting with a letter or digit, 1-128 chars. */
export const RESOURCE_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/**
 * Throws ConfigError unless `value` is a safe resource name. The narrow alphabet keeps a name
 * inside every backend's key space (no `:`, `{`, `}`, `/`, `..`, whitespace or control chars).
 */
export function resourceName(option: string, value: unknown): string {
  if (typeof value !== "string" || !RESOURCE_PATTERN.test(value)) {
    throw new ConfigError(
      option,
      value,
      "a string of 1-128 characters from A-Z a-z 0-9 . _ - starting with a letter or digit",
    );
  }
  return value;
}

/** Holder ids: printable ASCII without spaces, 1-200 chars. */
export function holderIdValue(option: string, value: unknown): string {
  if (typeof value !== "string" || !/^[\x21-\x7e]{1,200}$/.test(value)) {
    throw new ConfigError(option, value, "a string of 1-200 printable ASCII characters without spaces");
  }
  return value;
}

/** Throws ConfigError unless `value` is undefined or an AbortSignal. */
export function optionalSignal(option: string, value: unknown): AbortSignal | undefined {
  if (value === undefined) return undefined;
  if (!(value instanceof AbortSignal)) throw new ConfigError(option, value, "an AbortSignal or undefined");
  return value;
}

/** Throws ConfigError unless `value` is undefined or a plain object. */
export function optionalObject(option: string, value: unknown): Record<string, unknown> {
  if (value === undefined) return {};
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ConfigError(option, value, "an options object or undefined");
  }
  return value as Record<string, unknown>;
}
