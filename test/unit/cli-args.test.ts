import { numberArgument, oneOf, positiveNumber, readCommandLine, UsageError, wholeNumber, type OptionSpecs } from "../../src/cli/args.js";
import { PLAN_RANGES } from "../../src/contract/plan.js";

const SPECS = {
  limit: { type: "string", help: "" },
  pool: { type: "string", repeatable: true, help: "" },
  json: { type: "boolean", help: "" },
  help: { type: "boolean", short: "h", help: "" },
} as const satisfies OptionSpecs;

const usage = (fn: () => unknown) => {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(UsageError);
    return (error as Error).message;
  }
  throw new Error("expected a UsageError");
};

describe("readCommandLine (node:util parseArgs)", () => {
  test("--name value, --name=value, repeated options, flags, -h and positionals", () => {
    const line = readCommandLine(["orders-db", "--limit", "500", "--pool=A=1", "--pool", "B=2", "--json", "-h"], SPECS, "plan");
    expect(line.positionals).toEqual(["orders-db"]);
    expect(line.string("limit")).toBe("500");
    expect(line.strings("pool")).toEqual(["A=1", "B=2"]);
    expect(line.flag("json")).toBe(true);
    expect(line.flag("help")).toBe(true);
    expect(readCommandLine([], SPECS, "plan").strings("pool")).toEqual([]);
  });

  test("errors name the option in plain words", () => {
    expect(usage(() => readCommandLine(["--frob"], SPECS, "status"))).toBe("unknown option --frob for status; allowed: --limit <value>, --pool <value>, --json, --help");
    expect(usage(() => readCommandLine(["--limit"], SPECS, "plan"))).toBe("--limit needs a value");
    expect(usage(() => readCommandLine(["--limit", "--json"], SPECS, "plan"))).toMatch(/^--limit needs a value/);
    expect(usage(() => readCommandLine(["--json=yes"], SPECS, "plan"))).toBe("--json takes no value");
    expect(usage(() => readCommandLine(["--limit", "1", "--limit", "2"], SPECS, "plan"))).toBe("--limit was given 2 times; give it once");
  });

  test("a negative number after an option is its value, so the number check can judge it", () => {
    expect(readCommandLine(["--limit", "-5"], SPECS, "plan").string("limit")).toBe("-5");
  });

  test("asking for an undeclared option, or the wrong kind, is a programming error", () => {
    const line = readCommandLine([], SPECS, "plan");
    expect(() => line.string("nope")).toThrow(/declares no such option/);
    expect(() => line.flag("limit")).toThrow(/declares a string one/);
  });
});

describe("number options say what they accept", () => {
  test("positiveNumber", () => {
    expect(positiveNumber("limit", "500")).toBe(500);
    expect(positiveNumber("limit", "2.5")).toBe(2.5);
    for (const bad of ["abc", "0", "-5", "", "1e3", "Infinity", "0x10"]) {
      expect(usage(() => positiveNumber("limit", bad))).toBe(`--limit must be a positive number, got ${JSON.stringify(bad)}`);
    }
  });

  test("wholeNumber", () => {
    expect(wholeNumber("partitions", "20", { min: 1, max: 10_000 })).toBe(20);
    expect(usage(() => wholeNumber("partitions", "2.5", { min: 1, max: 10_000 }))).toBe('--partitions must be a whole number from 1 to 10000, got "2.5"');
    expect(usage(() => wholeNumber("interval-ms", "abc", { min: 1, unit: "milliseconds" }))).toBe('--interval-ms must be a whole number of milliseconds, at least 1, got "abc"');
  });

  test("numberArgument: the plan's own ranges, in words", () => {
    expect(numberArgument("drift-factor", "0.001", PLAN_RANGES.driftFactor)).toBe(0.001);
    expect(numberArgument("jitter-ms", "2.5", { ...PLAN_RANGES.jitterMs, max: 1000, unit: "milliseconds" })).toBe(2.5);
    for (const bad of ["0.2", "-0", "1e-3", "x", ""]) {
      expect(usage(() => numberArgument("drift-factor", bad, PLAN_RANGES.driftFactor))).toBe(`--drift-factor must be a number from 0 to 0.1, got ${JSON.stringify(bad)}`);
    }
    expect(usage(() => numberArgument("jitter-ms", "1001", { ...PLAN_RANGES.jitterMs, max: 1000, unit: "milliseconds" }))).toBe('--jitter-ms must be a number of milliseconds from 0 to 1000, got "1001"');
    expect(usage(() => numberArgument("lease-ttl-ms", "60001", { ...PLAN_RANGES.leaseTtlMs, unit: "milliseconds" }))).toBe('--lease-ttl-ms must be a whole number of milliseconds from 100 to 60000, got "60001"');
    expect(usage(() => numberArgument("weight", "0", { min: 0, minExclusive: true, max: 5 }))).toBe('--weight must be a positive number up to 5, got "0"');
    expect(usage(() => numberArgument("share", "1", { min: 1, minExclusive: true }))).toBe('--share must be a number, above 1, got "1"');
  });

  test("oneOf", () => {
    expect(oneOf("scenario", "cosmos", ["queues", "cosmos"])).toBe("cosmos");
    expect(usage(() => oneOf("backend", "mongo", ["azure", "redis", "etcd", "redlock"]))).toBe('--backend must be azure, redis, etcd or redlock, got "mongo"');
  });
});
