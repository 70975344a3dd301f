/** UsageError is a bad command line: the CLI prints it with a hint and exits with status 2. */
export class UsageError extends Error {
  /** Creates the error; `message` names the argument and what is allowed. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** A parsed command line: positional words and options (repeatable options keep every value). */
export interface ParsedArgs {
  readonly positional: string[];
  readonly options: Map<string, string[]>;
}

/**
 * parseArgs splits `argv` into positionals and `--name value` / `--name=value` options. Flags
 * listed in `flags` take no value. Unknown options are a UsageError, naming the allowed ones.
 */
export function parseArgs(argv: readonly string[], valued: readonly string[], flags: readonly string[]): ParsedArgs {
  const positional: string[] = [];
  const options = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith("--")) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
    if (flags.includes(name)) {
      if (eq !== -1) throw new UsageError(`--${name} takes no value`);
      options.set(name, ["true"]);
      continue;
    }
    if (!valued.includes(name)) {
      throw new UsageError(`unknown option --${name}; allowed: ${[...valued, ...flags].map((n) => `--${n}`).join(", ")}`);
    }
    const value = eq === -1 ? argv[++i] : arg.slice(eq + 1);
    if (value === undefined || (eq === -1 && value.startsWith("--"))) throw new UsageError(`--${name} needs a value`);
    options.set(name, [...(options.get(name) ?? []), value]);
  }
  return { positional, options };
}

/** The single value of option `name`, or undefined; a UsageError when given twice. */
export function single(args: ParsedArgs, name: string): string | undefined {
  const values = args.options.get(name);
  if (values && values.length > 1) throw new UsageError(`--${name} was given ${values.length} times; give it once`);
  return values?.[0];
}

/** Option `name` as a number in [min, max] (integer if asked); a UsageError naming the value otherwise. */
export function numberOption(args: ParsedArgs, name: string, opts: { min: number; max?: number; integer?: boolean; fallback?: number }): number | undefined {
  const text = single(args, name);
  if (text === undefined) return opts.fallback;
  const value = Number(text);
  const max = opts.max ?? Number.MAX_SAFE_INTEGER;
  if (text.trim() === "" || !Number.isFinite(value) || value < opts.min || value > max || (opts.integer && !Number.isInteger(value))) {
    throw new UsageError(`--${name} must be ${opts.integer ? "an integer" : "a number"} from ${opts.min} to ${max}, got ${JSON.stringify(text)}`);
  }
  return value;
}
