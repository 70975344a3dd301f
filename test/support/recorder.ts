import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { performance } from "node:perf_hooks";
import { raisePriority } from "./priority.js";
import { QuotaWindow } from "./quota-window.js";

// No jest imports here: fault tests and benchmarks start the recorder too.

/** Header carrying the worker's id. */
export const WORKER_HEADER = "x-worker";
/** Header carrying the request's cost in units (default 1). */
export const COST_HEADER = "x-cost";
/**
 * Header carrying when the worker sent the request, as `performance.timeOrigin + performance.now()`
 * of the sender (ms since the epoch, fractional), so the recorder can estimate in-flight delays.
 */
export const SENT_AT_HEADER = "x-sent-at";
/** The limit of the plan the sender's limiter admitted the request under (audits across plan changes). */
export const PLAN_LIMIT_HEADER = "x-plan-limit";

/** Arrival is one request as the recorder saw it. */
export interface Arrival {
  /** When it arrived: `performance.now()` of the recorder's process, the one clock for all workers. */
  readonly t: number;
  /** The sending worker's id (`"?"` when the header is missing). */
  readonly worker: string;
  /** Units it costs. */
  readonly cost: number;
  /** The status answered: 200, or 429 when a quota is enforced and it was exceeded. */
  readonly status: number;
  /**
   * Arrival minus the sender's `x-sent-at`, on the epoch timeline of both processes, in ms; null
   * without the header. Offsets between two processes' time origins can skew it by a millisecond
   * or so, so compare delays of one worker with each other, not across workers.
   */
  readonly delayMs: number | null;
  /** The sender's `x-sent-at` mapped onto the recorder's clock (`t - delayMs`); null without the header. */
  readonly sentAt: number | null;
  /** The limit of the plan it was admitted under (`x-plan-limit`), when the sender says. */
  readonly planLimit?: number;
}

/** Options of {@link startRecorder}. */
export interface RecorderOptions {
  /**
   * Enforce a quota like a real throttled service: a request that would put more than `limit`
   * units into the last `intervalMs` (counting only requests answered 200) gets 429 with a
   * `Retry-After` in whole seconds. Default: none, every request gets 200.
   */
  quota?: { limit: number; intervalMs: number };
  /**
   * Raise the calling thread's scheduling priority while the recorder runs (see HARNESS_NICE in
   * priority.ts), so a CPU-bound neighbour cannot delay arrival timestamps. Default true.
   */
  raisePriority?: boolean;
}

/** Recorder is a running throttled-service stand-in, from {@link startRecorder}. */
export interface Recorder {
  /** `http://127.0.0.1:PORT/`. */
  readonly url: string;
  /** The recorder's clock (`performance.now()` of this process), the timeline of every arrival. */
  now(): number;
  /** Every arrival since the start or the last {@link reset}, in arrival order (a copy). */
  arrivals(): Arrival[];
  /** Forgets every arrival (and the enforced quota's history). */
  reset(): void;
  /** Closes every connection and the listener. */
  stop(): Promise<void>;
}

/**
 * startRecorder starts an HTTP server on a free port of 127.0.0.1 that plays the throttled service:
 * it records each request's arrival time, worker (`x-worker`) and cost (`x-cost`), and answers
 * at once with an empty body. The handler does as little as possible, so the arrival times measure
 * the senders and the network, not the recorder.
 */
export async function startRecorder(options: RecorderOptions = {}): Promise<Recorder> {
  let log: Arrival[] = [];
  const quota = options.quota ? new QuotaWindow(options.quota) : null;

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const t = performance.now();
    const worker = headerValue(req, WORKER_HEADER) ?? "?";
    const cost = Number(headerValue(req, COST_HEADER) ?? "1");
    const sentAt = Number(headerValue(req, SENT_AT_HEADER));
    const delayMs = Number.isFinite(sentAt) && sentAt > 0 ? performance.timeOrigin + t - sentAt : null;
    const refusedForMs = quota?.admit(t, cost) ?? null;
    const status = refusedForMs === null ? 200 : 429;
    const retryAfterS = refusedForMs === null ? 0 : Math.max(1, Math.ceil(refusedForMs / 1000));
    const planLimit = Number(headerValue(req, PLAN_LIMIT_HEADER));
    log.push({ t, worker, cost, status, delayMs, sentAt: delayMs === null ? null : t - delayMs, ...(planLimit > 0 ? { planLimit } : {}) });
    // Drain the (empty) body so the keep-alive connection can carry the next request.
    req.resume();
    if (status === 429) res.writeHead(429, { "retry-after": String(retryAfterS), "content-length": "0" });
    else res.writeHead(200, { "content-length": "0" });
    res.end();
  };

  const server = createServer({ keepAliveTimeout: 60_000 }, handle);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const restorePriority = options.raisePriority === false ? () => undefined : raisePriority();
  return {
    url: `http://127.0.0.1:${port}/`,
    now: () => performance.now(),
    arrivals: () => log.slice(),
    reset: () => {
      log = [];
      quota?.reset();
    },
    stop: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      restorePriority();
    },
  };
}

function headerValue(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}
