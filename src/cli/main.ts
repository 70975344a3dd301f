#!/usr/bin/env node
/**
 * The `partitioned-rate-limiter` command: `status` shows a resource's plan and who holds which
 * partition; `plan` creates or verifies a plan. Run with `--help`.
 */
import { PartitionedRateLimiterError } from "../errors/partitioned-rate-limiter-error.js";
import { partitionPools, validatePlan, type Plan } from "../contract/plan.js";
import type { PartitionState } from "../contract/lease-backend.js";
import { numberOption, parseArgs, single, UsageError, type ParsedArgs } from "./args.js";
import { BACKEND_URL_FORMS, BackendUrlError, parseBackendUrl, redact } from "./backend-url.js";
import { connectBackend, type ConnectedBackend } from "./connect-backend.js";

/** Exit statuses scripts can rely on. */
export const EXIT = { ok: 0, failure: 1, usage: 2, planMismatch: 3, unreachable: 4 } as const;

const HELP = `partitioned-rate-limiter <command> [options]

Commands:
  status <resource> --backend <address> [--json]
      The stored plan and, per partition, its pool, holder and time left on the lease.
  plan <resource> --limit <n> --interval-ms <ms> --partitions <n> [--pool name=n ...]
       --backend <address> [--grace-ms <ms>] [--json]
      Creates the plan if none is stored, else verifies it (exit 3 when it differs). A new plan
      grants no lease for --grace-ms (default 60000, the longest lease any backend grants): a
      backend that lost its state cannot tell a first start from a restart that forgot live
      leases. Use --grace-ms 0 only for a server you know is fresh.

Options for every command:
  --backend <address>   where the leases live; repeat it with redis:// URLs for Redlock:
    ${BACKEND_URL_FORMS.join("\n    ")}
  --prefix <p>          key/blob prefix, if the limiters use a non-default one
  --timeout-ms <ms>     bound of each backend call and connection (default 5000)
  --json                machine-readable output on stdout
  --help                this text

Exit status: 0 ok, 1 other failure, 2 bad arguments, 3 plan mismatch (or no plan, for status),
4 backend unreachable or failing.`;

const COMMON = ["backend", "prefix", "timeout-ms"];

/** Runs the CLI with `argv` (without node and script), writing to the given streams; resolves the exit status. */
export async function runCli(argv: readonly string[], out: NodeJS.WritableStream = process.stdout, err: NodeJS.WritableStream = process.stderr): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === "--help" || command === "-h" || command === "help" || rest.includes("--help")) {
    out.write(`${HELP}\n`);
    return command === undefined ? EXIT.usage : EXIT.ok;
  }
  let connected: ConnectedBackend | null = null;
  try {
    let args: ParsedArgs;
    if (command === "status") args = parseArgs(rest, COMMON, ["json"]);
    else if (command === "plan") args = parseArgs(rest, [...COMMON, "limit", "interval-ms", "partitions", "pool", "grace-ms"], ["json"]);
    else throw new UsageError(`unknown command ${JSON.stringify(command)}; expected status or plan`);
    const resource = args.positional[0];
    if (resource === undefined) throw new UsageError(`${command} needs a <resource>`);
    if (args.positional.length > 1) throw new UsageError(`unexpected argument ${JSON.stringify(args.positional[1])}`);
    const spec = parseBackendUrl(args.options.get("backend") ?? []);
    const timeoutMs = numberOption(args, "timeout-ms", { min: 1, max: 600_000, integer: true, fallback: 5000 })!;
    const json = args.options.has("json");
    const prefix = single(args, "prefix");
    // Validate everything before touching the network.
    const wanted = command === "plan" ? planFromArgs(args) : null;
    const graceMs = numberOption(args, "grace-ms", { min: 0, max: 86_400_000, integer: true, fallback: 60_000 })!;
    connected = await withTimeout(connectBackend(spec, { timeoutMs, reconnect: false, ...(prefix === undefined ? {} : { prefix }) }), timeoutMs, "connecting");
    const backend = connected.backend;
    const where = `${backend.name} backend`;
    if (command === "status") {
      const plan = await backend.readPlan(resource, { timeoutMs });
      if (plan === null) {
        if (json) out.write(`${JSON.stringify({ resource, plan: null, partitions: [] })}\n`);
        err.write(`no plan is stored for ${JSON.stringify(resource)} on the ${where}\n`);
        return EXIT.planMismatch;
      }
      const partitions = await backend.inspect(resource, { timeoutMs });
      out.write(json ? `${JSON.stringify({ resource, backend: backend.name, plan, partitions })}\n` : formatStatus(resource, backend.name, plan, partitions));
      return EXIT.ok;
    }
    const plan = wanted!;
    const before = await backend.readPlan(resource, { timeoutMs });
    await backend.ensurePlan(resource, plan, { graceMs, timeoutMs });
    const outcome = before === null ? "created" : "verified";
    if (json) out.write(`${JSON.stringify({ resource, backend: backend.name, outcome, plan, graceMs: before === null ? graceMs : 0 })}\n`);
    else {
      out.write(`${outcome} plan of ${resource} on the ${where}: ${describePlan(plan)}\n`);
      if (before === null && graceMs > 0) out.write(`no lease is granted for the next ${graceMs} ms (grace period of a new plan)\n`);
    }
    return EXIT.ok;
  } catch (error) {
    if (error instanceof UsageError || error instanceof BackendUrlError || PartitionedRateLimiterError.isError(error, "ERR_CONFIG")) {
      err.write(`error: ${(error as Error).message}\nRun with --help for usage.\n`);
      return EXIT.usage;
    }
    if (PartitionedRateLimiterError.isError(error, "ERR_PLAN_MISMATCH")) {
      err.write(`plan mismatch: ${error.message}\n`);
      return EXIT.planMismatch;
    }
    if (/needs the package/.test((error as Error)?.message ?? "")) {
      err.write(`error: ${(error as Error).message}\n`);
      return EXIT.failure;
    }
    // Timeouts, refused connections, server errors: the backend could not answer.
    err.write(`backend unreachable or failing: ${redact((error as Error)?.message ?? String(error))}\n`);
    return EXIT.unreachable;
  } finally {
    await connected?.close().catch(() => undefined);
  }
}

function planFromArgs(args: ParsedArgs): Plan {
  const required = (name: string) => {
    if (!args.options.has(name)) throw new UsageError(`plan needs --${name}`);
  };
  required("limit");
  required("interval-ms");
  required("partitions");
  const pools: Record<string, number> = {};
  for (const entry of args.options.get("pool") ?? []) {
    const match = /^([^=]+)=(\d+)$/.exec(entry);
    if (!match) throw new UsageError(`--pool must look like name=count, got ${JSON.stringify(entry)}`);
    if (match[1]! in pools) throw new UsageError(`--pool ${match[1]} was given twice`);
    pools[match[1]!] = Number(match[2]);
  }
  return validatePlan({
    limit: numberOption(args, "limit", { min: Number.MIN_VALUE })!,
    intervalMs: numberOption(args, "interval-ms", { min: 1, integer: true })!,
    partitions: numberOption(args, "partitions", { min: 1, integer: true })!,
    pools,
  });
}

function describePlan(plan: Plan): string {
  const pools = Object.entries(plan.pools).map(([name, n]) => `${name}=${n}`).join(", ");
  return `limit ${plan.limit} per ${plan.intervalMs} ms, ${plan.partitions} partitions of ${+(plan.limit / plan.partitions).toFixed(6)}${pools ? `, pools ${pools}` : ""}`;
}

function formatStatus(resource: string, backendName: string, plan: Plan, partitions: readonly PartitionState[]): string {
  const owners = partitionPools(plan);
  const held = partitions.filter((p) => p.holderId !== null).length;
  const rows = [["partition", "pool", "holder", "time left", "fencing"]];
  for (const p of partitions) {
    rows.push([
      String(p.partition),
      p.pool ?? owners[p.partition] ?? "shared",
      p.holderId ?? "-",
      p.holderId === null ? "-" : p.expiresInMs === null ? "unknown" : `${(p.expiresInMs / 1000).toFixed(1)} s`,
      p.fencingToken === null ? "-" : String(p.fencingToken),
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const table = rows.map((r) => r.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n");
  return `${resource} on ${backendName}: ${describePlan(plan)}\n${held} of ${plan.partitions} partitions held\n\n${table}\n`;
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

// Run when executed directly (the bin entry), not when imported by tests.
const entry = process.argv[1] ?? "";
if (/(^|[\\/])(main\.[cm]?[jt]s|partitioned-rate-limiter)$/.test(entry)) {
  runCli(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`unexpected failure: ${(error as Error)?.stack ?? String(error)}\n`);
      process.exitCode = EXIT.failure;
    },
  );
}
