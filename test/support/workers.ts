import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { performance } from "node:perf_hooks";
import type { BackendSpec } from "./backend-spec.js";
import { normalPriority, raisePriority } from "./priority.js";
import {
  WORKER_CONFIG_ENV,
  type ParentMessage,
  type WorkerConfig,
  type WorkerLimiterOptions,
  type WorkerMessage,
  type WorkerStats,
} from "./worker-protocol.js";

// No jest imports here: fault tests and benchmarks drive workers with this module too.

/** Options of {@link startWorkers}. */
export interface StartWorkersOptions {
  /** Limiter options every worker uses (the backend comes from the spec). */
  limiter: WorkerLimiterOptions;
  /** Where workers send their requests, e.g. a Recorder's `url`. */
  targetUrl: string;
  /** Concurrent `acquire → request` loops per worker. Default 32: far more than pacing admits at once. */
  concurrency?: number;
  /** Costs of successive requests, cycled. Default `[1]`. */
  costs?: readonly number[];
  /** Periodic stats report interval, in ms (workers also report at once when they gain or lose a partition). Default 100. */
  statsEveryMs?: number;
  /** How long to wait for every worker to load and connect, in ms. Default 60,000 (tsx compiles on start). */
  readyTimeoutMs?: number;
  /** Worker ids are `${idPrefix}${i}`. Default `"w"`. */
  idPrefix?: string;
  /** Run the workers at raised scheduling priority where permitted (see HARNESS_NICE in priority.ts). Default true. */
  raisePriority?: boolean;
  /**
   * Per-worker limiter options laid over `limiter` (entry i for worker i), e.g. a weight or a
   * reserve for one of them. Default: none.
   */
  limiterOverrides?: readonly Partial<WorkerLimiterOptions>[];
  /**
   * Start every worker once all are ready (default true). With false, each waits, connected and
   * compiled, until {@link WorkerHandle.start}: a staggered join then costs no start-up time.
   */
  autoStart?: boolean;
}

/** WorkerHandle is the parent's view of one worker process. */
export interface WorkerHandle {
  readonly id: string;
  readonly pid: number;
  /** False once the process exited or was sent SIGKILL (its last stats then no longer count). */
  readonly alive: boolean;
  /** The latest stats report, or null before the first. */
  stats(): WorkerStats | null;
  /** When the latest stats arrived, on this process's `performance.now()`; -Infinity before the first. */
  readonly statsAt: number;
  /** Log lines the worker sent and the tail of its stderr, for failure messages. */
  logs(): string[];
  /** Sends a signal (default SIGKILL, as a crash). SIGSTOP/SIGCONT pause and resume it. */
  kill(signal?: NodeJS.Signals): void;
  /** Asks the worker to close its limiter and exit; SIGKILLs it after `timeoutMs` (default 15,000). Resolves its final stats. */
  stop(timeoutMs?: number): Promise<WorkerStats | null>;
  /** Settles when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Tells the worker to create its limiter and start its demand (once; later calls do nothing). */
  start(): void;
  /** When {@link start} was sent, on this process's `performance.now()`; null before. */
  readonly startedAt: number | null;
}

/** WorkerGroup is a set of running workers, from {@link startWorkers}. */
export interface WorkerGroup {
  readonly workers: readonly WorkerHandle[];
  /** Partitions held by live workers, summed over their latest reports. */
  heldPartitions(): number;
  /** Calls `listener` on every stats report, with its arrival time on `performance.now()`. Returns an unsubscribe function. */
  onStats(listener: (worker: WorkerHandle, stats: WorkerStats, at: number) => void): () => void;
  /**
   * Resolves the `performance.now()` of the first stats report after which `predicate` holds
   * (checked at once and after each report); rejects after `timeoutMs` naming `what`.
   */
  waitFor(predicate: () => boolean, timeoutMs: number, what: string): Promise<number>;
  /** Stops every live worker (see {@link WorkerHandle.stop}). */
  stop(): Promise<void>;
}

const children = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

/**
 * startWorkers spawns `n` worker processes (`node --import tsx test/support/worker.ts`), each
 * building the backend of `spec` and a PartitionedRateLimiter with `options.limiter`. It waits
 * until all have connected, then starts them together, so no worker takes every partition before
 * the others exist. Rejects (killing them all) if one fails or the ready timeout passes.
 */
export async function startWorkers(n: number, spec: BackendSpec, options: StartWorkersOptions): Promise<WorkerGroup> {
  const root = repoRoot();
  const script = join(root, "test", "support", "worker.ts");
  const listeners = new Set<(worker: WorkerHandle, stats: WorkerStats, at: number) => void>();
  const handles: WorkerHandle[] = [];
  const readies: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    const config: WorkerConfig = {
      id: `${options.idPrefix ?? "w"}${i}`,
      backend: spec,
      limiter: { ...options.limiter, ...(options.limiterOverrides?.[i] ?? {}) },
      targetUrl: options.targetUrl,
      concurrency: options.concurrency ?? 32,
      costs: options.costs ?? [1],
      statsEveryMs: options.statsEveryMs ?? 100,
    };
    const { handle, ready } = spawnWorker(script, root, config, (h, stats, at) => {
      for (const listener of listeners) listener(h, stats, at);
    });
    // Start-up (tsx compiling) runs at normal priority; the raise comes once the worker is ready.
    normalPriority(handle.pid);
    if (options.raisePriority !== false) void ready.then(() => raisePriority(handle.pid), () => undefined);
    handles.push(handle);
    readies.push(ready);
  }
  const readyTimeoutMs = options.readyTimeoutMs ?? 60_000;
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      Promise.all(readies),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`workers were not ready within ${readyTimeoutMs} ms`)), readyTimeoutMs);
      }),
    ]);
  } catch (error) {
    for (const h of handles) h.kill("SIGKILL");
    const logs = handles.map((h) => `${h.id}: ${h.logs().join(" | ")}`).join("\n");
    throw new Error(`${(error as Error).message}\n${logs}`, { cause: error });
  } finally {
    clearTimeout(timer);
  }
  if (options.autoStart !== false) for (const h of handles) h.start();

  const group: WorkerGroup = {
    workers: handles,
    heldPartitions: () => handles.reduce((sum, h) => sum + (h.alive ? (h.stats()?.limiter.heldPartitions ?? 0) : 0), 0),
    onStats: (listener) => {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    waitFor: (predicate, timeoutMs, what) =>
      new Promise<number>((resolve, reject) => {
        if (predicate()) return resolve(performance.now());
        const off = group.onStats((_, __, at) => {
          if (!predicate()) return;
          off();
          clearTimeout(timeout);
          resolve(at);
        });
        const timeout = setTimeout(() => {
          off();
          reject(new Error(`${what} did not happen within ${timeoutMs} ms (held partitions now ${group.heldPartitions()})`));
        }, timeoutMs);
      }),
    stop: async () => {
      await Promise.all(handles.map((h) => h.stop()));
    },
  };
  return group;
}

interface InternalHandle extends WorkerHandle {
  send(message: ParentMessage): void;
}

function spawnWorker(
  script: string,
  root: string,
  config: WorkerConfig,
  onStats: (handle: WorkerHandle, stats: WorkerStats, at: number) => void,
): { handle: InternalHandle; ready: Promise<void> } {
  const child = spawn(process.execPath, ["--import", "tsx", script], {
    cwd: root,
    env: { ...process.env, [WORKER_CONFIG_ENV]: JSON.stringify(config) },
    stdio: ["ignore", "pipe", "pipe", "ipc"],
  });
  children.add(child);
  const logs: string[] = [];
  const log = (line: string) => {
    logs.push(line);
    if (logs.length > 50) logs.shift();
  };
  child.stdout?.on("data", (chunk: Buffer) => log(`stdout: ${chunk.toString().trim()}`));
  child.stderr?.on("data", (chunk: Buffer) => log(`stderr: ${chunk.toString().trim()}`));
  let latest: WorkerStats | null = null;
  let finalStats: WorkerStats | null = null;
  let killed = false;
  let exitedFlag = false;
  let startedAt: number | null = null;
  let resolveReady!: () => void;
  let rejectReady!: (error: Error) => void;
  const ready = new Promise<void>((resolve, reject) => {
    resolveReady = resolve;
    rejectReady = reject;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("exit", (code, signal) => {
      exitedFlag = true;
      children.delete(child);
      rejectReady(new Error(`worker ${config.id} exited (code ${code}, signal ${signal}) before it was ready: ${logs.join(" | ")}`));
      resolve({ code, signal });
    });
  });
  const handle: InternalHandle = {
    id: config.id,
    pid: child.pid ?? -1,
    get alive() {
      return !killed && !exitedFlag;
    },
    statsAt: -Infinity,
    stats: () => latest,
    logs: () => logs.slice(),
    kill: (signal = "SIGKILL") => {
      if (signal === "SIGKILL") killed = true;
      if (!exitedFlag) child.kill(signal);
    },
    send: (message) => {
      if (child.connected) child.send(message);
    },
    get startedAt() {
      return startedAt;
    },
    start: () => {
      if (startedAt !== null) return;
      startedAt = performance.now();
      handle.send({ type: "start" });
    },
    stop: async (timeoutMs = 15_000) => {
      if (exitedFlag) return finalStats ?? latest;
      handle.send({ type: "stop" });
      const timer = setTimeout(() => {
        log(`did not stop within ${timeoutMs} ms: SIGKILL`);
        child.kill("SIGKILL");
      }, timeoutMs);
      await exited;
      clearTimeout(timer);
      return finalStats ?? latest;
    },
    exited,
  };
  child.on("message", (message: WorkerMessage) => {
    const at = performance.now();
    switch (message.type) {
      case "ready":
        resolveReady();
        break;
      case "failed":
        log(message.message);
        rejectReady(new Error(`worker ${config.id}: ${message.message}`));
        break;
      case "log":
        log(message.message);
        break;
      case "stats":
      case "stopped":
        latest = message.stats;
        if (message.type === "stopped") finalStats = message.stats;
        (handle as { statsAt: number }).statsAt = at;
        onStats(handle, message.stats, at);
        break;
    }
  });
  return { handle, ready };
}

/** The repository root: the nearest directory up from the working directory whose package.json is this package's. */
function repoRoot(): string {
  for (let dir = process.cwd(); ; dir = dirname(dir)) {
    const manifest = join(dir, "package.json");
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, "utf8")) as { name?: string }).name === "partitioned-rate-limiter") return dir;
    if (dirname(dir) === dir) throw new Error(`startWorkers: run from inside the partitioned-rate-limiter repository (cwd ${process.cwd()})`);
  }
}
