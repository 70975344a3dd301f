import { execFile } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import type { ModelTools } from "./tools.js";

const run = promisify(execFile);

/** What a check must show (model/checks.txt explains the column). */
export type Expectation = "verify" | "fail" | "finding";

/** One line of model/checks.txt. */
export interface ModelCheck {
  readonly name: string;
  readonly expect: Expectation;
  /** The VIOLATION kind the counterexample must end in, `acceptance-cycle`, or null for verify. */
  readonly violation: string | null;
  readonly search: "dfs" | "bfs";
  /** The -D flags, e.g. ["-DCFG_LEASE", "-DNO_QUIET"]. */
  readonly defines: readonly string[];
  /** Liveness (an LTL property, acceptance cycles) rather than assertions. */
  readonly liveness: boolean;
}

/** What one check found. */
export interface CheckResult {
  readonly check: ModelCheck;
  readonly errors: number;
  readonly statesStored: number;
  readonly transitions: number;
  readonly depthReached: number;
  /** The search stopped early (depth or memory bound): an "errors: 0" then proves nothing. */
  readonly truncated: string | null;
  /** Seconds pan reported for the search itself. */
  readonly searchSeconds: number;
  /** Seconds for spin -a, the C compiler and pan together. */
  readonly wallSeconds: number;
  /** The kind of violation the trail ends in (see ModelCheck.violation), or null. */
  readonly violation: string | null;
  /** The counterexample as a readable log ("t=8 holder 0 admits …"), empty without one. */
  readonly trail: readonly string[];
  /** pan's own output, for failure messages. */
  readonly panOutput: string;
}

/** The model and its check table. */
export const MODEL_DIR = join(__dirname, "..", "..", "model");

/** Parses model/checks.txt. */
export function readChecks(file = join(MODEL_DIR, "checks.txt")): ModelCheck[] {
  const checks: ModelCheck[] = [];
  for (const raw of readFileSync(file, "utf8").split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const [name, expect, violation, search, ...defines] = line.split(/\s+/);
    if (!name || (expect !== "verify" && expect !== "fail" && expect !== "finding") || !violation || (search !== "dfs" && search !== "bfs")) {
      throw new Error(`model/checks.txt: cannot read line "${line}"`);
    }
    checks.push({
      name,
      expect,
      violation: violation === "-" ? null : violation,
      search,
      defines,
      liveness: defines.includes("-DCFG_FAIR"),
    });
  }
  return checks;
}

function numberAfter(text: string, pattern: RegExp): number {
  const match = pattern.exec(text);
  return match ? Number(match[1]) : NaN;
}

/**
 * Turns the replay of a trail (`spin -t`) into a log: the model prints "tick" at every server
 * tick and a line per event; each event gets the server time it happened at.
 */
export function formatTrail(replay: string): string[] {
  const log: string[] = [];
  let t = 0;
  for (const raw of replay.split("\n")) {
    const line = raw.trim();
    if (line === "tick") {
      t++;
    } else if (line === "<<<<<START OF CYCLE>>>>>") {
      log.push(`t=${t} (the run repeats from here forever)`);
    } else if (/^(holder|BACKEND|OPERATOR|VIOLATION|the backend|\(|not ours|no plan|refused|renewed|partition)/.test(line)) {
      log.push(`t=${t} ${line}`);
    }
  }
  return log;
}

/**
 * Runs one check in `workDir/<name>`: spin -a, the C compiler, pan, and for a counterexample the
 * replay of its trail. Counterexample searches compile with -O0 (they are short; compiling is the
 * slow part), full verifications with -O1.
 */
export async function runCheck(check: ModelCheck, tools: ModelTools, workDir: string): Promise<CheckResult> {
  const started = process.hrtime.bigint();
  const dir = join(workDir, check.name);
  mkdirSync(dir, { recursive: true });
  copyFileSync(join(MODEL_DIR, "lease.pml"), join(dir, "lease.pml"));
  await run(tools.spin, ["-a", ...check.defines, "lease.pml"], { cwd: dir });
  const ccFlags = [check.expect === "verify" ? "-O1" : "-O0", "-w", "-DMEMLIM=512", "-o", "pan", "pan.c"];
  if (!check.liveness) ccFlags.unshift("-DSAFETY");
  if (check.search === "bfs") ccFlags.unshift("-DBFS");
  await run(tools.cc, ccFlags, { cwd: dir, maxBuffer: 16 << 20 });
  const panArgs = ["-m1000000", "-w23"];
  if (check.liveness) panArgs.unshift("-a");
  // pan exits with 0 also when it finds an error; a non-zero exit is a crash.
  const { stdout: panOutput } = await run(join(dir, "pan"), panArgs, { cwd: dir, maxBuffer: 64 << 20 });
  const errors = numberAfter(panOutput, /errors: (\d+)/);
  let truncated: string | null = null;
  if (/max search depth too small/.test(panOutput)) truncated = "the depth bound (-m) was reached";
  if (/reached -DMEMLIM bound/.test(panOutput)) truncated = "the memory bound (-DMEMLIM) was reached";
  let trail: string[] = [];
  let violation: string | null = null;
  if (errors > 0 && existsSync(join(dir, "lease.pml.trail"))) {
    const { stdout } = await run(tools.spin, ["-t", ...check.defines, "lease.pml"], { cwd: dir, maxBuffer: 64 << 20 });
    trail = formatTrail(stdout);
    if (check.liveness) {
      violation = /acceptance cycle/.test(panOutput) ? "acceptance-cycle" : null;
    } else {
      const line = trail.find((l) => l.includes("VIOLATION "));
      violation = line ? /VIOLATION ([a-z-]+)/.exec(line)![1]! : null;
    }
  }
  return {
    check,
    errors,
    statesStored: numberAfter(panOutput, /(\d+) states, stored/),
    transitions: numberAfter(panOutput, /(\d+) transitions \(= (?:stored|visited)\+matched\)/),
    depthReached: numberAfter(panOutput, /depth reached (\d+)/),
    truncated,
    searchSeconds: numberAfter(panOutput, /elapsed time ([\d.e+-]+) seconds/),
    wallSeconds: Number(process.hrtime.bigint() - started) / 1e9,
    violation,
    trail,
    panOutput,
  };
}

/** Runs `checks` with at most `parallel` at a time; results in the order of `checks`. */
export async function runChecks(checks: readonly ModelCheck[], tools: ModelTools, workDir: string, parallel: number): Promise<CheckResult[]> {
  const results: CheckResult[] = new Array<CheckResult>(checks.length);
  let next = 0;
  const worker = async () => {
    while (next < checks.length) {
      const i = next++;
      results[i] = await runCheck(checks[i]!, tools, workDir);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, parallel) }, worker));
  return results;
}

/** One line of the summary table: name, outcome, states, transitions, depth, time. */
export function summaryLine(r: CheckResult): string {
  const outcome = r.errors === 0 ? "verified, 0 errors" : `counterexample: ${r.violation ?? "?"} (${r.trail.length} events)`;
  return (
    `${r.check.name.padEnd(27)} ${r.check.expect.padEnd(8)} ${outcome.padEnd(40)} ` +
    `${String(r.statesStored).padStart(9)} states ${String(r.transitions).padStart(10)} transitions ` +
    `depth ${String(r.depthReached).padStart(6)}  search ${r.searchSeconds.toFixed(2)} s  total ${r.wallSeconds.toFixed(1)} s`
  );
}
