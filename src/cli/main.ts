#!/usr/bin/env node
/**
 * The `partitioned-rate-limiter` command: `status` shows a resource's plan and who holds which
 * partition; `plan` creates or verifies a plan; `dashboard` serves a live page of both. Run with `--help`. Each command is a file under
 * commands/; adding one is adding it to COMMANDS.
 */
import { PartitionedRateLimiterError } from "../errors/partitioned-rate-limiter-error.js";
import { describeOptions, readCommandLine, UsageError } from "./args.js";
import { BackendUnreachableError, describeCause } from "./backend-unreachable-error.js";
import { BACKEND_URL_FORMS, BackendUrlError, redact } from "./backend-url.js";
import { COMMON_OPTIONS, EXIT, type Command, type CommandIo } from "./command.js";
import { dashboardCommand } from "./commands/dashboard.js";
import { planCommand } from "./commands/plan.js";
import { statusCommand } from "./commands/status.js";

export { EXIT } from "./command.js";

const COMMANDS: readonly Command[] = [statusCommand, planCommand, dashboardCommand];

const EXIT_TEXT = `Exit status: 0 ok, 1 other failure, 2 bad arguments, 3 plan mismatch (or no plan, for status),
4 backend unreachable or failing.`;

const ADDRESSES = `Backend addresses (--backend):\n  ${BACKEND_URL_FORMS.join("\n  ")}`;

function help(): string {
  const commands = COMMANDS.map((c) => `  ${c.synopsis}\n      ${wrap(c.description, 6)}`).join("\n");
  return `partitioned-rate-limiter <command> [options]\n\nCommands:\n${commands}\n\nOptions for every command:\n${describeOptions(COMMON_OPTIONS)}\n\n${ADDRESSES}\n\n${EXIT_TEXT}`;
}

function commandHelp(command: Command): string {
  const own = Object.keys(command.options).length > 0 ? `\n\nOptions:\n${describeOptions(command.options)}` : "";
  return `partitioned-rate-limiter ${command.synopsis}\n\n${wrap(command.description, 0)}${own}\n\nOptions for every command:\n${describeOptions(COMMON_OPTIONS)}\n\n${ADDRESSES}\n\n${EXIT_TEXT}`;
}

function wrap(text: string, indent: number): string {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/)) {
    if (line && line.length + word.length + 1 > 96 - indent) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines.join(`\n${" ".repeat(indent)}`);
}

/** Runs the CLI with `argv` (without node and script), writing to the given streams; resolves the exit status. */
export async function runCli(argv: readonly string[], out: NodeJS.WritableStream = process.stdout, err: NodeJS.WritableStream = process.stderr): Promise<number> {
  const io: CommandIo = { out, err };
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    out.write(`${help()}\n`);
    return name === undefined ? EXIT.usage : EXIT.ok;
  }
  try {
    const command = COMMANDS.find((c) => c.name === name);
    if (command === undefined) {
      const names = COMMANDS.map((c) => c.name);
      throw new UsageError(`unknown command ${JSON.stringify(name)}; expected ${names.length > 1 ? `${names.slice(0, -1).join(", ")} or ${names[names.length - 1]}` : names[0]}`);
    }
    const line = readCommandLine(rest, { ...COMMON_OPTIONS, ...command.options }, name);
    if (line.flag("help")) {
      out.write(`${commandHelp(command)}\n`);
      return EXIT.ok;
    }
    return await command.run(line, io);
  } catch (error) {
    return report(error, err);
  }
}

/** Writes what went wrong and returns the exit status for it. */
function report(error: unknown, err: NodeJS.WritableStream): number {
  if (error instanceof UsageError || error instanceof BackendUrlError || PartitionedRateLimiterError.isError(error, "ERR_CONFIG")) {
    err.write(`error: ${(error as Error).message}\nRun with --help for usage.\n`);
    return EXIT.usage;
  }
  if (PartitionedRateLimiterError.isError(error, "ERR_PLAN_MISMATCH")) {
    err.write(`plan mismatch: ${error.message}\n`);
    return EXIT.planMismatch;
  }
  if (error instanceof BackendUnreachableError) {
    err.write(`backend unreachable or failing: ${redact(error.message)}\n`);
    return EXIT.unreachable;
  }
  const message = (error as Error)?.message ?? String(error);
  if (/needs the package/.test(message)) {
    err.write(`error: ${message}\n`);
    return EXIT.failure;
  }
  err.write(`error: ${redact(describeCause(error))}\n`);
  return EXIT.failure;
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
