import { parseArgs } from "node:util";
import { inRange, type NumberRange } from "../contract/validate.js";
import { UsageError } from "./usage-error.js";

export { UsageError } from "./usage-error.js";

/** One option of a command: `--name <value>` (`string`) or `--name` (`boolean`). */
export interface OptionSpec {
  readonly type: "string" | "boolean";
  /** May be given more than once (each value is kept); otherwise twice is a UsageError. */
  readonly repeatable?: boolean;
  /** A one-letter alias, e.g. `h` for `-h`. */
  readonly short?: string;
  /** The value's placeholder in help texts, e.g. `<ms>`. */
  readonly value?: string;
  /** One line for help texts. */
  readonly help: string;
}

/** A command's options by name (without the leading `--`). */
export type OptionSpecs = Readonly<Record<string, OptionSpec>>;

/**
 * What {@link readCommandLine} found: positionals, and accessors by option name (without `--`).
 * Asking for an option the command did not declare, or for the wrong kind, is a programming
 * error and throws.
 */
export interface CommandLine {
  readonly positionals: readonly string[];
  /** The value of a string option given at most once, or undefined. */
  string(name: string): string | undefined;
  /** Every value of a string option, in order (empty when absent). */
  strings(name: string): readonly string[];
  /** Whether a boolean option was given. */
  flag(name: string): boolean;
}

/**
 * readCommandLine parses `argv` with `node:util` `parseArgs` (strict: unknown options are
 * errors; `--name value` and `--name=value`; `--` ends the options) and turns its errors into
 * UsageErrors that name the option and, for an unknown one, the options `where` accepts.
 */
export function readCommandLine(argv: readonly string[], specs: OptionSpecs, where: string): CommandLine {
  const options: Record<string, { type: "string" | "boolean"; multiple: boolean; short?: string }> = {};
  for (const [name, spec] of Object.entries(specs)) {
    options[name] = { type: spec.type, multiple: true, ...(spec.short === undefined ? {} : { short: spec.short }) };
  }
  let parsed: { values: Record<string, (string | boolean)[] | undefined>; positionals: string[] };
  try {
    parsed = parseArgs({ args: joinNegativeNumbers(argv, specs), options, strict: true, allowPositionals: true }) as typeof parsed;
  } catch (error) {
    throw usageErrorFrom(error, specs, where);
  }
  for (const [name, spec] of Object.entries(specs)) {
    const count = parsed.values[name]?.length ?? 0;
    if (!spec.repeatable && count > 1) throw new UsageError(`--${name} was given ${count} times; give it once`);
  }
  const values = (name: string, type: OptionSpec["type"]) => {
    if (specs[name]?.type !== type) throw new Error(`${where} asked for --${name} as a ${type} option, but declares ${specs[name] ? `a ${specs[name].type} one` : "no such option"}`);
    return parsed.values[name] ?? [];
  };
  return {
    positionals: parsed.positionals,
    string: (name) => values(name, "string")[0] as string | undefined,
    strings: (name) => values(name, "string") as string[],
    flag: (name) => values(name, "boolean").length > 0,
  };
}

/**
 * `--limit -5` is ambiguous to parseArgs (is -5 an option?); a number is never an option here, so
 * it becomes `--limit=-5` and the number check can say what is wrong with it.
 */
function joinNegativeNumbers(argv: readonly string[], specs: OptionSpecs): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const next = argv[i + 1];
    const name = arg.startsWith("--") ? arg.slice(2) : null;
    if (name !== null && specs[name]?.type === "string" && next !== undefined && /^-\d/.test(next)) {
      out.push(`${arg}=${next}`);
      i++;
    } else out.push(arg);
  }
  return out;
}

function usageErrorFrom(error: unknown, specs: OptionSpecs, where: string): unknown {
  const code = (error as { code?: unknown })?.code;
  const message = (error as Error)?.message ?? "";
  const option = /'(-{1,2}[^'\s<]+)/.exec(message)?.[1] ?? "?";
  const allowed = Object.entries(specs).map(([name, spec]) => `--${name}${spec.type === "string" ? ` ${spec.value ?? "<value>"}` : ""}`).join(", ");
  if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") return new UsageError(`unknown option ${option} for ${where}; allowed: ${allowed}`);
  if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
    if (/does not take an argument/.test(message)) return new UsageError(`${option} takes no value`);
    return new UsageError(`${option} needs a value${/ambiguous/.test(message) ? ` (a value starting with "-" is written ${option}=-VALUE)` : ""}`);
  }
  return error;
}

/** The range a number argument must be in: the library's own range for the setting, where it has one. */
export interface ArgumentRange extends NumberRange {
  /** The unit for the message, e.g. `"milliseconds"`. */
  readonly unit?: string;
}

/**
 * The number written in `text` for option `--name`, if it lies in `range` (decimal digits for an
 * `integer` range, otherwise a decimal number such as `2.5` or `.001`; no signs, exponents or
 * hexadecimal); a UsageError that says in words what is accepted otherwise, e.g.
 * `--partitions must be a whole number from 1 to 10000, got "2.5"`,
 * `--drift-factor must be a number from 0 to 0.1, got "x"`.
 */
export function numberArgument(name: string, text: string, range: ArgumentRange): number {
  const syntax = range.integer ? /^\d+$/ : /^(\d+(\.\d*)?|\.\d+)$/;
  const value = syntax.test(text.trim()) ? Number(text.trim()) : NaN;
  if (inRange(value, range) && (!range.integer || Number.isSafeInteger(value))) return value;
  throw new UsageError(`--${name} must be ${inWords(range)}, got ${JSON.stringify(text)}`);
}

/**
 * The whole number written in `text` for option `--name`, from `range.min` to `range.max`
 * (see {@link numberArgument}).
 */
export function wholeNumber(name: string, text: string, range: Omit<ArgumentRange, "integer">): number {
  return numberArgument(name, text, { ...range, integer: true });
}

/**
 * The positive decimal number written in `text` (e.g. `500`, `2.5`), for option `--name`; a
 * UsageError otherwise: `--limit must be a positive number, got "abc"`.
 */
export function positiveNumber(name: string, text: string): number {
  return numberArgument(name, text, { min: 0, minExclusive: true });
}

/** A range in plain words: "a whole number of milliseconds from 1 to 600000", "a positive number". */
function inWords({ min, max, minExclusive = false, integer = false, unit }: ArgumentRange): string {
  const positive = min === 0 && minExclusive;
  const kind = `${integer ? "a whole number" : positive ? "a positive number" : "a number"}${unit === undefined ? "" : ` of ${unit}`}`;
  const low = min === undefined || positive ? null : `${minExclusive ? "above" : "at least"} ${min}`;
  if (max === undefined) return low === null ? kind : `${kind}, ${low}`;
  if (low === null) return `${kind} up to ${max}`;
  return minExclusive ? `${kind} ${low} and at most ${max}` : `${kind} from ${min} to ${max}`;
}

/** Help lines for `specs`, aligned: `  --name <value>   help`. */
export function describeOptions(specs: OptionSpecs): string {
  const rows = Object.entries(specs).map(([name, spec]) => [`--${name}${spec.type === "string" ? ` ${spec.value ?? "<value>"}` : ""}${spec.short ? `, -${spec.short}` : ""}`, spec.help] as const);
  const width = Math.max(...rows.map(([left]) => left.length));
  return rows.map(([left, help]) => `  ${left.padEnd(width)}  ${help}`).join("\n");
}

/** `text` if it is one of `choices`; a UsageError listing them otherwise: `--scenario must be queues or cosmos, got "x"`. */
export function oneOf<T extends string>(name: string, text: string, choices: readonly T[]): T {
  if ((choices as readonly string[]).includes(text)) return text as T;
  const list = choices.length <= 2 ? choices.join(" or ") : `${choices.slice(0, -1).join(", ")} or ${choices[choices.length - 1]}`;
  throw new UsageError(`--${name} must be ${list}, got ${JSON.stringify(text)}`);
}
