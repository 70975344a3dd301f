import { BackendError } from "../errors/backend-error.js";
import { PartitionedRateLimiterError } from "../errors/partitioned-rate-limiter-error.js";
import type { LeaseBackend } from "../contract/lease-backend.js";
import { wholeNumber, type CommandLine, type OptionSpecs } from "./args.js";
import { BackendUnreachableError } from "./backend-unreachable-error.js";
import { describeServers, parseBackendUrl } from "./backend-url.js";
import { connectBackend, type ConnectedBackend } from "./connect-backend.js";
import { UsageError } from "./usage-error.js";

/** Exit statuses scripts can rely on. */
export const EXIT = { ok: 0, failure: 1, usage: 2, planMismatch: 3, unreachable: 4 } as const;

/** Options every command takes. */
export const COMMON_OPTIONS = {
  backend: { type: "string", repeatable: true, value: "<address>", help: "where the leases live (forms below); repeat it with redis:// URLs for Redlock" },
  prefix: { type: "string", value: "<p>", help: "key/blob prefix, if the limiters use a non-default one" },
  "timeout-ms": { type: "string", value: "<ms>", help: "bound of each backend call and connection (default 5000)" },
  json: { type: "boolean", help: "machine-readable output on stdout" },
  help: { type: "boolean", short: "h", help: "this text" },
} as const satisfies OptionSpecs;

/** Where a command writes. */
export interface CommandIo {
  readonly out: NodeJS.WritableStream;
  readonly err: NodeJS.WritableStream;
}

/**
 * Command is one subcommand of the CLI: its usage, its own options (merged with
 * {@link COMMON_OPTIONS}) and what it does. `run` resolves the exit status; it throws UsageError
 * (exit 2), BackendUrlError (2), ConfigError (2), PlanMismatchError (3), or anything else for a
 * failing backend (4).
 */
export interface Command {
  readonly name: string;
  /** e.g. `status <resource> --backend <address> [--json]`. */
  readonly synopsis: string;
  /** A paragraph for `--help`. */
  readonly description: string;
  readonly options: OptionSpecs;
  run(line: CommandLine, io: CommandIo): Promise<number>;
}

/** The one `<resource>` positional of a command; a UsageError when missing or followed by more. */
export function resourceArgument(line: CommandLine, command: string): string {
  const [resource, extra] = line.positionals;
  if (resource === undefined) throw new UsageError(`${command} needs a <resource>`);
  if (extra !== undefined) throw new UsageError(`unexpected argument ${JSON.stringify(extra)} after the resource`);
  return resource;
}

/** The connection a command works with. */
export interface OpenBackend {
  readonly backend: LeaseBackend;
  /** e.g. `redis 127.0.0.1:6379`, for messages. */
  readonly where: string;
  readonly timeoutMs: number;
}

/** Options of {@link withBackend}. */
export interface WithBackendOptions {
  /**
   * Let Redis clients reconnect after a dropped connection, for a command that runs until stopped
   * (`dashboard`). Default false: a one-shot command fails at once instead.
   */
  readonly reconnect?: boolean;
}

/**
 * withBackend parses `--backend`, `--prefix` and `--timeout-ms`, connects (every server is
 * reached first, so an unreachable one is named at once), runs `fn`, and closes the clients.
 * Servers the backend can do without (a Redlock minority) are reported on stderr.
 */
export async function withBackend<T>(line: CommandLine, io: CommandIo, fn: (open: OpenBackend) => Promise<T>, options: WithBackendOptions = {}): Promise<T> {
  const spec = parseBackendUrl(line.strings("backend"));
  const timeoutText = line.string("timeout-ms");
  const timeoutMs = timeoutText === undefined ? 5000 : wholeNumber("timeout-ms", timeoutText, { min: 1, max: 600_000, unit: "milliseconds" });
  const prefix = line.string("prefix");
  const where = describeServers(spec);
  const connected = await bounded(connectBackend(spec, { timeoutMs, reconnect: options.reconnect ?? false, verify: true, ...(prefix === undefined ? {} : { prefix }) }), timeoutMs, where);
  try {
    for (const warning of connected.warnings) io.err.write(`warning: ${warning}\n`);
    return await fn({ backend: connected.backend, where, timeoutMs });
  } catch (error) {
    // The library's own verdicts (plan mismatch, bad plan) pass as they are; failures get the servers' names.
    if (error instanceof UsageError || (PartitionedRateLimiterError.isError(error) && !BackendError.is(error) && error.code !== "ERR_TIMEOUT")) throw error;
    throw new BackendUnreachableError(where, BackendError.is(error) ? (error.cause ?? error) : error, BackendError.is(error) ? error.operation : undefined);
  } finally {
    await connected.close().catch(() => undefined);
  }
}

/**
 * `connecting` within `ms`, or a BackendUnreachableError (`no answer within N ms`) naming the servers:
 * a server that accepts TCP but never answers (paused, blackholed) must not hang the command. A
 * connection that completes after the bound is closed.
 */
async function bounded(connecting: Promise<ConnectedBackend>, ms: number, where: string): Promise<ConnectedBackend> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new BackendUnreachableError(where, new Error(`no answer within ${ms} ms`))), ms);
  });
  try {
    return await Promise.race([connecting, late]);
  } catch (error) {
    void connecting.then((c) => c.close(), () => undefined);
    throw error;
  } finally {
    clearTimeout(timer);
  }
}
