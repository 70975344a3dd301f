import type { Metadata, ServerInterceptingCall, ServerInterceptor } from "@grpc/grpc-js";
import { performance } from "node:perf_hooks";
import { ConfigError } from "../errors/config-error.js";
import { LimiterClosedError } from "../errors/limiter-closed-error.js";
import { QueueFullError } from "../errors/queue-full-error.js";
import { TimeoutError } from "../errors/timeout-error.js";
import type { PartitionedRateLimiter } from "../limiter/partitioned-rate-limiter.js";
import { finiteNumber } from "../contract/validate.js";
import { callWeights, type CallWeights } from "./call-weights.js";
import { deadlineMs } from "./deadline.js";
import { isGrpcModule, type GrpcModule } from "./grpc-module.js";
import { PushbackSchedule } from "./pushback-schedule.js";
import { RETRY_PUSHBACK_TRAILER } from "./retry-pushback.js";

/** GrpcShedInfo describes one call answered without running its handler, by {@link loadSheddingInterceptor}. */
export interface GrpcShedInfo {
  /** Why: the wait would exceed `maxWaitMs` (or the call's deadline), the limiter's queue is full, or it is closed. */
  readonly reason: "timeout" | "queue-full" | "closed";
  /** The status answered: `RESOURCE_EXHAUSTED`, or `UNAVAILABLE` for a closed limiter. */
  readonly code: number;
  /** The call's cost in units. */
  readonly cost: number;
  /** Units queued in the limiter when it was shed. */
  readonly queuedUnits: number;
  /** Units per interval the limiter holds now, after its rate factor. */
  readonly capacity: number;
  /** The `grpc-retry-pushback-ms` sent, in whole ms (>= 1). */
  readonly pushbackMs: number;
}

/** LoadSheddingInterceptorOptions are the options of {@link loadSheddingInterceptor}. */
export interface LoadSheddingInterceptorOptions {
  /** The grpc-js module (`import * as grpc from "@grpc/grpc-js"`). */
  grpc: GrpcModule;
  /** Admits each call before its handler runs. */
  limiter: PartitionedRateLimiter;
  /** The longest a call may wait for admission, in ms; beyond it the call is shed. */
  maxWaitMs: number;
  /**
   * Units per call: a number, or a function of the method path (`"/pkg.Service/Method"`) and the
   * request metadata. Default 1. A cost of 0 runs the handler without admission.
   */
  cost?: number | ((method: string, metadata: Metadata) => number);
  /** Limiter queue priority: a number or a function of the method path and metadata. Default 0. */
  priority?: number | ((method: string, metadata: Metadata) => number);
  /**
   * Overrides the pushback (ms, at least 1 is sent). Default: a schedule at the held pace (see
   * `PushbackSchedule`): the limiter's backlog plus the units of calls shed before this one and
   * not yet due back, plus this cost, at the pace held now, so a burst's shed callers come back
   * spread out at a pace that can be admitted.
   */
  pushbackMs?: (info: Omit<GrpcShedInfo, "pushbackMs">) => number;
  /** The computed pushback never exceeds this many ms. Default 60,000. */
  maxPushbackMs?: number;
  /** Called for each shed call (logging, metrics). */
  onShed?: (method: string, info: GrpcShedInfo) => void;
}

/**
 * loadSheddingInterceptor returns a grpc-js server interceptor (`new Server({ interceptors: [...] })`,
 * grpc-js 1.10 or later) that admits each call through the limiter before its handler runs,
 * waiting at most `maxWaitMs` (and never past the call's deadline). When the wait would be longer,
 * the queue is full or the limiter is closed, the call is answered at once, without running the
 * handler: `RESOURCE_EXHAUSTED` (`UNAVAILABLE` when closed) with a `grpc-retry-pushback-ms`
 * trailer scheduled at the held pace. A call the client cancels while it waits leaves the queue.
 * Streams are admitted once, when they start. Other failures (a cost the quota can never admit,
 * a cost function that threw) answer `INTERNAL`.
 */
export function loadSheddingInterceptor(options: LoadSheddingInterceptorOptions): ServerInterceptor {
  if (typeof options !== "object" || options === null) throw new ConfigError("loadSheddingInterceptor(options)", options, "an options object");
  const { grpc, limiter, onShed } = options;
  if (!isGrpcModule(grpc)) throw new ConfigError("loadSheddingInterceptor(options.grpc)", grpc, `the @grpc/grpc-js module (import * as grpc from "@grpc/grpc-js")`);
  if (typeof limiter?.acquire !== "function" || typeof limiter.stats !== "function") {
    throw new ConfigError("loadSheddingInterceptor(options.limiter)", limiter, "a PartitionedRateLimiter");
  }
  const maxWaitMs = finiteNumber("loadSheddingInterceptor(options.maxWaitMs)", options.maxWaitMs, { min: 0 });
  const weigh = callWeights("loadSheddingInterceptor", options.cost, options.priority);
  const maxPushbackMs = options.maxPushbackMs === undefined ? 60_000 : finiteNumber("loadSheddingInterceptor(options.maxPushbackMs)", options.maxPushbackMs, { min: 1 });
  const schedule = new PushbackSchedule(limiter.intervalMs, maxPushbackMs);
  const { status: Status, Metadata: MetadataClass, ServerInterceptingCall: InterceptingCall } = grpc;

  return (methodDescriptor, call) => {
    const method = methodDescriptor.path;
    const gone = new AbortController();
    const intercepted: ServerInterceptingCall = new InterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, admitted) {
            let weights: CallWeights;
            try {
              weights = weigh(method, metadata);
            } catch (error) {
              intercepted.sendStatus({ code: Status.INTERNAL, details: errorMessage(error) });
              return;
            }
            const { cost: units, priority: prio } = weights;
            if (units === 0) return admitted(metadata);
            const timeoutMs = Math.max(0, Math.min(maxWaitMs, deadlineMs(call.getDeadline()) - Date.now()));
            limiter.acquire(units, { timeoutMs, signal: gone.signal, priority: prio }).then(
              () => {
                if (!gone.signal.aborted) admitted(metadata);
              },
              (error: unknown) => {
                if (gone.signal.aborted) return;
                const reason = TimeoutError.is(error) ? "timeout" : QueueFullError.is(error) ? "queue-full" : LimiterClosedError.is(error) ? "closed" : null;
                if (reason === null) {
                  intercepted.sendStatus({ code: Status.INTERNAL, details: errorMessage(error) });
                  return;
                }
                const stats = limiter.stats();
                const code = reason === "closed" ? Status.UNAVAILABLE : Status.RESOURCE_EXHAUSTED;
                const base = { reason, code, cost: units, queuedUnits: stats.queuedUnits, capacity: stats.capacity * stats.rateFactor } as const;
                const pushbackMs = options.pushbackMs
                  ? Math.max(1, Math.ceil(options.pushbackMs(base)))
                  : schedule.next({ ...base, pausedForMs: stats.pausedForMs }, performance.now());
                const info: GrpcShedInfo = { ...base, pushbackMs };
                onShed?.(method, info);
                const trailers = new MetadataClass();
                trailers.set(RETRY_PUSHBACK_TRAILER, String(pushbackMs));
                intercepted.sendStatus({ code, details: `Server overloaded; retry after ${pushbackMs} ms`, metadata: trailers });
              },
            );
          },
          onCancel() {
            gone.abort(new Error("call cancelled by the client"));
          },
        });
      },
    });
    return intercepted;
  };
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
