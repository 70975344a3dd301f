import type { Interceptor, InterceptingListener, Listener, Metadata, StatusObject } from "@grpc/grpc-js";
import { ConfigError } from "../errors/config-error.js";
import { LimiterClosedError } from "../errors/limiter-closed-error.js";
import { QueueFullError } from "../errors/queue-full-error.js";
import { TimeoutError } from "../errors/timeout-error.js";
import type { PartitionedRateLimiter } from "../limiter/partitioned-rate-limiter.js";
import { finiteNumber } from "../contract/validate.js";
import { callWeights, type CallWeights } from "./call-weights.js";
import { deadlineMs } from "./deadline.js";
import { isGrpcModule, type GrpcModule } from "./grpc-module.js";
import { retryPushbackMs } from "./retry-pushback.js";

/** LimiterInterceptorOptions are the options of {@link limiterInterceptor}. */
export interface LimiterInterceptorOptions {
  /** The grpc-js module (`import * as grpc from "@grpc/grpc-js"`). */
  grpc: GrpcModule;
  /** Admits every call before it is sent. */
  limiter: PartitionedRateLimiter;
  /**
   * Units per call: a number, or a function of the method path (`"/pkg.Service/Method"`) and the
   * call's metadata (e.g. a batch size the caller put there). Default 1. A cost of 0 sends the
   * call without admission (e.g. health checks). A stream is admitted once, when it starts, not
   * per message.
   */
  cost?: number | ((method: string, metadata: Metadata) => number);
  /** Limiter queue priority: a number or a function of the method path and metadata. Default 0. */
  priority?: number | ((method: string, metadata: Metadata) => number);
  /**
   * The longest a call waits for admission, in ms; beyond it the call fails locally with
   * `RESOURCE_EXHAUSTED` and is never sent. Default: no bound but the call's deadline (a call
   * whose deadline passes while it waits fails with `DEADLINE_EXCEEDED`, unsent).
   */
  maxWaitMs?: number;
}

/**
 * limiterInterceptor returns a grpc-js client interceptor that admits each call through the
 * limiter before it goes on the wire (`acquire(cost)`, bounded by the call's deadline and
 * `maxWaitMs`), and reports every `RESOURCE_EXHAUSTED` the server answers to the limiter:
 * `reportThrottle({ retryAfterMs })` with the `grpc-retry-pushback-ms` trailer when the server
 * sent a valid one (admissions then pause that long), `reportThrottle()` otherwise.
 *
 * A call that cannot be admitted is never sent and ends with a status of its own:
 * `RESOURCE_EXHAUSTED` (the limiter's queue is full, or `maxWaitMs` passed), `DEADLINE_EXCEEDED`,
 * `UNAVAILABLE` (the limiter is closed), `INTERNAL` (a cost the quota can never admit, or a cost
 * function that threw), `CANCELLED` when the caller cancels it while it waits.
 *
 * Caveat: grpc-js retries configured in a service config (`retryPolicy`) happen below the
 * interceptors, so their attempts are not admitted; retry above the client, through the limiter
 * (e.g. `retryWithLimiter`), instead.
 */
export function limiterInterceptor(options: LimiterInterceptorOptions): Interceptor {
  if (typeof options !== "object" || options === null) throw new ConfigError("limiterInterceptor(options)", options, "an options object");
  const { grpc, limiter } = options;
  if (!isGrpcModule(grpc)) throw new ConfigError("limiterInterceptor(options.grpc)", grpc, `the @grpc/grpc-js module (import * as grpc from "@grpc/grpc-js")`);
  if (typeof limiter?.acquire !== "function" || typeof limiter.reportThrottle !== "function") {
    throw new ConfigError("limiterInterceptor(options.limiter)", limiter, "a PartitionedRateLimiter");
  }
  const weigh = callWeights("limiterInterceptor", options.cost, options.priority);
  const maxWaitMs = options.maxWaitMs === undefined ? Infinity : finiteNumber("limiterInterceptor(options.maxWaitMs)", options.maxWaitMs, { min: 0 });
  const { status: Status, Metadata: MetadataClass, InterceptingCall } = grpc;

  // Reports a throttle from the server's answer; everything else passes through untouched.
  const reporting: Listener = {
    onReceiveStatus(status: StatusObject, next: (status: StatusObject) => void) {
      if (status.code === Status.RESOURCE_EXHAUSTED) {
        const retryAfterMs = retryPushbackMs(status.metadata);
        limiter.reportThrottle(retryAfterMs === null ? {} : { retryAfterMs });
      }
      next(status);
    },
  };

  return (callOptions, nextCall) => {
    const inner = nextCall(callOptions);
    const method = callOptions.method_definition.path;
    const waiting = new AbortController();
    let state: "new" | "waiting" | "started" | "ended" = "new";
    let outer: InterceptingListener | null = null;

    // Ends the call here, unsent: the inner call is cancelled (stopping its deadline timer) and the
    // caller's listener gets this status.
    const fail = (code: number, details: string) => {
      if (state === "ended" || state === "started") return;
      state = "ended";
      inner.cancelWithStatus(code, details);
      outer?.onReceiveStatus({ code, details, metadata: new MetadataClass() });
    };

    return new InterceptingCall(inner, {
      start(metadata, listener, next) {
        outer = listener;
        let weights: CallWeights;
        try {
          weights = weigh(method, metadata);
        } catch (error) {
          fail(Status.INTERNAL, errorMessage(error));
          return;
        }
        const { cost: units, priority: prio } = weights;
        if (units === 0) {
          state = "started";
          next(metadata, reporting);
          return;
        }
        const deadline = deadlineMs(callOptions.deadline);
        const untilDeadline = deadline - Date.now();
        const timeoutMs = Math.max(0, Math.min(maxWaitMs, untilDeadline));
        state = "waiting";
        limiter.acquire(units, { signal: waiting.signal, priority: prio, ...(Number.isFinite(timeoutMs) ? { timeoutMs } : {}) }).then(
          () => {
            if (state !== "waiting") return;
            // Admitted too late: the inner call's own deadline timer may already have fired unseen.
            if (Date.now() >= deadline) return fail(Status.DEADLINE_EXCEEDED, "Deadline exceeded while waiting for the rate limiter");
            state = "started";
            next(metadata, reporting);
          },
          (error: unknown) => {
            if (state !== "waiting") return;
            if (TimeoutError.is(error)) {
              if (untilDeadline <= maxWaitMs) fail(Status.DEADLINE_EXCEEDED, `Deadline exceeded while waiting for the rate limiter (${errorMessage(error)})`);
              else fail(Status.RESOURCE_EXHAUSTED, `Not admitted by the rate limiter within maxWaitMs ${maxWaitMs} (${errorMessage(error)})`);
            } else if (QueueFullError.is(error)) fail(Status.RESOURCE_EXHAUSTED, errorMessage(error));
            else if (LimiterClosedError.is(error)) fail(Status.UNAVAILABLE, errorMessage(error));
            else fail(Status.INTERNAL, errorMessage(error));
          },
        );
      },
      cancel(next) {
        // Cancelled while waiting: the inner call never started, so the caller hears it from here.
        if (state === "waiting" || state === "new") {
          waiting.abort(new Error("call cancelled"));
          fail(Status.CANCELLED, "Cancelled on client");
          return;
        }
        next();
      },
    });
  };
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
