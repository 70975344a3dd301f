import type { IncomingMessage, ServerResponse } from "node:http";
import { performance } from "node:perf_hooks";
import { ConfigError } from "../errors/config-error.js";
import { LimiterClosedError } from "../errors/limiter-closed-error.js";
import { QueueFullError } from "../errors/queue-full-error.js";
import { TimeoutError } from "../errors/timeout-error.js";
import type { PartitionedRateLimiter } from "../limiter/partitioned-rate-limiter.js";
import { finiteNumber } from "../contract/validate.js";

/** ShedInfo describes one request answered 503 by {@link loadShedding}. */
export interface ShedInfo {
  /** Why: the wait would exceed `maxWaitMs`, the limiter's queue is full, or it is closed. */
  readonly reason: "timeout" | "queue-full" | "closed";
  /** The request's cost in units. */
  readonly cost: number;
  /** Units queued in the limiter when it was shed. */
  readonly queuedUnits: number;
  /** Units per interval the limiter holds now, after its rate factor. */
  readonly capacity: number;
  /** The computed Retry-After in whole seconds (>= 1). */
  readonly retryAfterSeconds: number;
}

/** LoadSheddingOptions are the options of {@link loadShedding}. */
export interface LoadSheddingOptions<Req extends IncomingMessage = IncomingMessage> {
  /** Admits each request. */
  limiter: PartitionedRateLimiter;
  /** The longest a request may wait for admission, in ms; beyond it the answer is 503. */
  maxWaitMs: number;
  /** Units per request: a number or a function of the request. Default 1. */
  cost?: number | ((req: Req) => number);
  /** Limiter queue priority: a number or a function of the request. Default 0. */
  priority?: number | ((req: Req) => number);
  /**
   * Overrides the Retry-After (whole seconds, at least 1 is sent). Default: a schedule at the held
   * pace — the limiter's backlog (pause, queued units) plus the units of clients shed before this
   * one and not yet due back, plus this cost, divided by the pace per second, rounded up. So a
   * burst's shed clients are told different times and come back at a pace that can be admitted,
   * rather than all at once a second later.
   */
  retryAfter?: (info: Omit<ShedInfo, "retryAfterSeconds">) => number;
  /** The computed Retry-After never exceeds this many seconds. Default 60. */
  maxRetryAfterSeconds?: number;
  /** Called for each shed request (logging, metrics). */
  onShed?: (req: Req, info: ShedInfo) => void;
  /**
   * For a wrapped node:http listener ({@link LoadShedder.wrap}): called with an error the
   * listener threw or rejected with, or that a `cost`/`priority` function or the limiter raised
   * (other than the shedding reasons), so it is never lost. It should answer the request if
   * `res.headersSent` is false. Default: answer 500 with a short text (or destroy the response if
   * headers were sent) and write the error to `console.error`, as Express's default handler does.
   * Express middleware passes such errors to `next(error)` instead.
   */
  onError?: (error: unknown, req: Req, res: ServerResponse) => void;
}

/** A node:http request listener. */
export type RequestListener<Req extends IncomingMessage = IncomingMessage, Res extends ServerResponse = ServerResponse> = (req: Req, res: Res) => unknown;

/**
 * LoadShedder is what {@link loadShedding} returns: Express-style middleware `(req, res, next)`,
 * and a wrapper of a node:http listener, called as `shed(handler)` or `shed.wrap(handler)`.
 */
export interface LoadShedder<Req extends IncomingMessage = IncomingMessage> {
  (req: Req, res: ServerResponse, next: (error?: unknown) => void): void;
  <Res extends ServerResponse>(handler: RequestListener<Req, Res>): RequestListener<Req, Res>;
  /** Wraps a node:http request listener: it runs only for admitted requests. */
  wrap<Res extends ServerResponse>(handler: RequestListener<Req, Res>): RequestListener<Req, Res>;
}

/**
 * loadShedding admits each HTTP request through the limiter, waiting at most `maxWaitMs`
 * (`acquire` with `timeoutMs`), and answers 503 with a `Retry-After` computed from the limiter's
 * backlog when the wait would be longer, the queue is full (`maxQueued`) or the limiter is
 * closed, instead of queueing forever. A client that disconnects while queued leaves the queue.
 * Other errors (e.g. a cost the quota can never admit) go to `next(error)`; for a wrapped
 * listener they and the listener's own errors go to `onError`.
 */
export function loadShedding<Req extends IncomingMessage = IncomingMessage>(options: LoadSheddingOptions<Req>): LoadShedder<Req> {
  if (typeof options !== "object" || options === null) throw new ConfigError("loadShedding(options)", options, "an options object");
  const { limiter, onShed } = options;
  if (options.onError !== undefined && typeof options.onError !== "function") throw new ConfigError("loadShedding(options.onError)", options.onError, "a function (error, req, res) => void");
  const onError = options.onError ?? defaultOnError;
  if (typeof limiter?.acquire !== "function") throw new ConfigError("loadShedding(options.limiter)", limiter, "a PartitionedRateLimiter");
  const maxWaitMs = finiteNumber("loadShedding(options.maxWaitMs)", options.maxWaitMs, { min: 0 });
  const cost = options.cost ?? 1;
  if (typeof cost !== "function") finiteNumber("loadShedding(options.cost)", cost, { min: 0, minExclusive: true });
  const priority = options.priority ?? 0;
  const maxRetryAfterSeconds = options.maxRetryAfterSeconds === undefined ? 60 : finiteNumber("loadShedding(options.maxRetryAfterSeconds)", options.maxRetryAfterSeconds, { min: 1 });
  // Monotonic time up to which the held pace is already promised to clients told to come back.
  let promisedUntil = -Infinity;

  const retryAfterSeconds = (info: Omit<ShedInfo, "retryAfterSeconds">, pausedForMs: number): number => {
    if (options.retryAfter) return Math.max(1, Math.ceil(options.retryAfter(info)));
    const perMs = info.capacity / limiter.intervalMs;
    // Nothing held yet (leases are being taken): one interval is the honest guess.
    if (!(perMs > 0)) return Math.min(maxRetryAfterSeconds, Math.max(1, Math.ceil(limiter.intervalMs / 1000)));
    const now = performance.now();
    const start = Math.max(now + pausedForMs + info.queuedUnits / perMs, promisedUntil);
    promisedUntil = Math.min(start + info.cost / perMs, now + maxRetryAfterSeconds * 1000);
    return Math.min(maxRetryAfterSeconds, Math.max(1, Math.ceil((promisedUntil - now) / 1000)));
  };

  const admit = (req: Req, res: ServerResponse, onAdmitted: () => void, onError: (error: unknown) => void): void => {
    let units: number;
    let prio: number;
    try {
      units = typeof cost === "function" ? cost(req) : cost;
      prio = typeof priority === "function" ? priority(req) : priority;
    } catch (error) {
      onError(error);
      return;
    }
    const gone = new AbortController();
    const onClose = () => gone.abort(new Error("client disconnected"));
    res.once("close", onClose);
    limiter.acquire(units, { timeoutMs: maxWaitMs, signal: gone.signal, priority: prio }).then(
      () => {
        res.off("close", onClose);
        onAdmitted();
      },
      (error: unknown) => {
        res.off("close", onClose);
        if (gone.signal.aborted) return;
        const reason = TimeoutError.is(error) ? "timeout" : QueueFullError.is(error) ? "queue-full" : LimiterClosedError.is(error) ? "closed" : null;
        if (reason === null) {
          onError(error);
          return;
        }
        const stats = limiter.stats();
        const base = { reason, cost: units, queuedUnits: stats.queuedUnits, capacity: stats.capacity * stats.rateFactor } as const;
        const info: ShedInfo = { ...base, retryAfterSeconds: retryAfterSeconds(base, stats.pausedForMs) };
        onShed?.(req, info);
        if (res.headersSent) return;
        res.statusCode = 503;
        res.setHeader("Retry-After", String(info.retryAfterSeconds));
        res.setHeader("Content-Type", "text/plain; charset=utf-8");
        res.end(`Service overloaded; retry after ${info.retryAfterSeconds} s.\n`);
      },
    );
  };

  const wrap = <Res extends ServerResponse>(handler: RequestListener<Req, Res>): RequestListener<Req, Res> => {
    if (typeof handler !== "function") throw new ConfigError("loadShedding(...).wrap(handler)", handler, "a request listener (req, res) => void");
    return (req, res) => {
      const fail = (error: unknown) => {
        try {
          onError(error, req, res);
        } catch (thrown) {
          // An onError that throws must not leave the request hanging.
          defaultOnError(thrown, req, res);
        }
      };
      admit(req, res, () => {
        try {
          Promise.resolve(handler(req, res)).catch(fail);
        } catch (error) {
          fail(error);
        }
      }, fail);
    };
  };

  function shedder(req: Req, res: ServerResponse, next: (error?: unknown) => void): void;
  function shedder<Res extends ServerResponse>(handler: RequestListener<Req, Res>): RequestListener<Req, Res>;
  function shedder(...args: unknown[]): unknown {
    if (typeof args[0] === "function") return wrap(args[0] as RequestListener<Req>);
    const [req, res, next] = args as [Req, ServerResponse, ((error?: unknown) => void) | undefined];
    if (typeof next !== "function") throw new ConfigError("loadShedding(...)(req, res, next)", next, "a next function (use shed.wrap(handler) for node:http)");
    admit(req, res, () => next(), (error) => next(error));
    return undefined;
  }
  return Object.assign(shedder, { wrap }) as LoadShedder<Req>;
}

/** The default `onError`: 500 (or a destroyed response once headers are out) and the error on stderr. */
function defaultOnError(error: unknown, _req: IncomingMessage, res: ServerResponse): void {
  console.error("loadShedding: the request listener failed:", error);
  if (res.headersSent) {
    res.destroy(error instanceof Error ? error : undefined);
    return;
  }
  res.statusCode = 500;
  res.setHeader("Content-Type", "text/plain; charset=utf-8");
  res.end("Internal Server Error\n");
}
