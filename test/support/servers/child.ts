import { spawn, type ChildProcess } from "node:child_process";

// No jest imports here: the external-servers script starts servers with these launchers too.

/** ServerChild is one server process started by a launcher: its process, output tail and exit. */
export interface ServerChild {
  readonly proc: ChildProcess;
  /** What the launcher calls it in messages, e.g. `redis-server :7001`. */
  readonly what: string;
  /** The last 4,000 characters of its stdout and stderr, for failure messages. */
  output(): string;
  /** Whether the process is still running. */
  readonly alive: boolean;
  /** Settles once the process has exited. */
  readonly exited: Promise<void>;
  /** SIGKILLs it (after SIGCONT, in case it was paused) and resolves once it has exited. */
  kill(): Promise<void>;
  /** SIGTERM, then SIGKILL after `graceMs` (default 3,000); resolves once it has exited. */
  stop(graceMs?: number): Promise<void>;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

/**
 * spawnChild starts `binary args` as a server process with its output captured (never inherited:
 * servers are chatty). Every process started here is SIGKILLed when the test process exits, so a
 * test that fails before its teardown leaves no server behind.
 */
export function spawnChild(what: string, binary: string, args: readonly string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): ServerChild {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once("exit", () => {
      for (const proc of running) proc.kill("SIGKILL");
    });
  }
  const proc = spawn(binary, [...args], { cwd: options.cwd, env: options.env ?? process.env, stdio: ["ignore", "pipe", "pipe"] });
  running.add(proc);
  let tail = "";
  const collect = (chunk: Buffer) => {
    tail = (tail + chunk.toString()).slice(-4000);
  };
  proc.stdout?.on("data", collect);
  proc.stderr?.on("data", collect);
  let done = false;
  const exited = new Promise<void>((resolve) => {
    const finish = () => {
      done = true;
      running.delete(proc);
      resolve();
    };
    proc.once("exit", finish);
    proc.once("error", (error) => {
      tail += `\nspawn failed: ${error.message}`;
      finish();
    });
  });
  const child: ServerChild = {
    proc,
    what,
    output: () => tail.trim(),
    get alive() {
      return !done;
    },
    exited,
    async kill() {
      if (done) return;
      proc.kill("SIGCONT");
      proc.kill("SIGKILL");
      await exited;
    },
    async stop(graceMs = 3000) {
      if (done) return;
      proc.kill("SIGCONT");
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
  return child;
}

/**
 * Polls `check` every `everyMs` until it resolves to something other than `undefined`, and
 * resolves that. Rejects after `timeoutMs` naming `what` and the last error `check` threw, so a
 * server that never gets there fails the test with a reason instead of hanging it (`check` throws
 * to say why it is not there yet).
 */
export async function pollUntil<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      last = (error as Error).message;
    }
    if (Date.now() >= deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms${last ? ` (last: ${last})` : ""}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/**
 * Throws when `PRL_EXTERNAL_ONLY` is set: the external-servers run (scripts/test-external-servers.sh)
 * sets it so that a test which starts its own server although a server variable is set fails
 * loudly instead of silently testing something else.
 */
export function refuseIfExternalOnly(what: string, envName: string): void {
  if (process.env.PRL_EXTERNAL_ONLY) {
    throw new Error(
      `PRL_EXTERNAL_ONLY is set, but this test is starting its own ${what} (${envName} is ${process.env[envName] ? `set to ${process.env[envName]}` : "not set"}): ` +
        `a test run against external servers must use the servers its variables name`,
    );
  }
}
