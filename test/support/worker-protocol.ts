import type { PartitionedRateLimiterOptions } from "../../src/limiter/options.js";
import type { LimiterStats } from "../../src/limiter/partitioned-rate-limiter.js";
import type { BackendSpec } from "./backend-spec.js";

// The messages between a test (parent) and its worker processes (test/support/worker.ts).

/** WorkerLimiterOptions are limiter options that can cross a process boundary (no backend, clock or signal). */
export type WorkerLimiterOptions = Omit<PartitionedRateLimiterOptions, "backend" | "clock" | "signal">;

/** WorkerConfig is what one worker process is told to do, passed as JSON in {@link WORKER_CONFIG_ENV}. */
export interface WorkerConfig {
  /** The worker's id, sent with every request and used as the limiter's holderId prefix. */
  readonly id: string;
  readonly backend: BackendSpec;
  readonly limiter: WorkerLimiterOptions;
  /** Where the requests go (a {@link Recorder} URL). */
  readonly targetUrl: string;
  /** Concurrent `acquire → request` loops (saturating demand). */
  readonly concurrency: number;
  /** Cost of each request, cycled through in order, e.g. `[1]` or `[1, 2.5, 0.5]`. */
  readonly costs: readonly number[];
  /** How often the worker reports its stats, in ms. */
  readonly statsEveryMs: number;
}

/** The environment variable carrying a worker's {@link WorkerConfig}. */
export const WORKER_CONFIG_ENV = "PRL_WORKER_CONFIG";

/** WorkerStats is one stats report: the limiter's stats plus the worker's own counters. */
export interface WorkerStats {
  readonly limiter: LimiterStats;
  /** Requests sent and answered (any status). */
  readonly requests: number;
  /** Requests answered 429. */
  readonly throttled: number;
  /** Requests that failed on the network. */
  readonly requestErrors: number;
  /** Backend calls made so far (every `backend-call` event). */
  readonly backendCalls: number;
}

/** Messages from the parent to a worker. */
export type ParentMessage = { readonly type: "start" } | { readonly type: "stop" };

/** Messages from a worker to the parent. */
export type WorkerMessage =
  | { readonly type: "ready" }
  | { readonly type: "stats"; readonly stats: WorkerStats }
  | { readonly type: "log"; readonly message: string }
  | { readonly type: "stopped"; readonly stats: WorkerStats }
  | { readonly type: "failed"; readonly message: string };
