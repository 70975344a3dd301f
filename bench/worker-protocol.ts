import type { Quota } from "./peers.js";

// The messages between bench/accuracy.ts and its worker processes (bench/worker.ts), apart from
// the worker so that importing them does not run a worker.

/** What a worker is told, as JSON in {@link BENCH_WORKER_ENV}. */
export interface BenchWorkerConfig {
  readonly id: string;
  readonly kind: "ours" | "rlf-redis" | "bottleneck-cluster";
  readonly redisUrl: string;
  /** Resource name, key prefix or Bottleneck id: the same in every worker of one run. */
  readonly name: string;
  readonly quota: Quota;
  readonly partitions: number;
  readonly concurrency: number;
  readonly targetUrl: string;
}

/** The counters a worker reports when it stops. */
export interface BenchWorkerStats {
  readonly admitted: number;
  readonly requestErrors: number;
  readonly admitErrors: number;
  /** Event-loop delay of the worker while it ran, in ms: how late its timers fired. */
  readonly loopDelayMs: { readonly p50: number; readonly p99: number };
  readonly detail: string;
}

export type BenchWorkerMessage =
  | { readonly type: "ready" }
  | { readonly type: "stopped"; readonly stats: BenchWorkerStats }
  | { readonly type: "failed"; readonly message: string };

export const BENCH_WORKER_ENV = "PRL_BENCH_WORKER";
