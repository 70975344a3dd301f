import { ConfigError } from "../errors/config-error.js";
import type { PartitionedRateLimiter } from "../limiter/partitioned-rate-limiter.js";
import { finiteNumber } from "../contract/validate.js";
import { parseRetryAfter } from "./retry-after.js";
import { resolveRetryPolicy, retryWithLimiter, type RetryInfo, type RetryPolicyOptions } from "./retry-with-limiter.js";

/** FetchLike is the shape of `fetch` that {@link createRetryingFetch} wraps. */
export type FetchLike = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

/** RetryingFetchOptions are the options of {@link createRetryingFetch}. */
export interface RetryingFetchOptions extends RetryPolicyOptions {
  /** Admits every attempt and hears of every throttle. */
  limiter: PartitionedRateLimiter;
  /** The fetch to wrap. Default `globalThis.fetch`. */
  fetch?: FetchLike;
  /** Units each attempt costs: a number or a function of the request. Default 1. */
  cost?: number | ((input: string | URL | Request, init: RequestInit | undefined) => number);
  /**
   * Statuses retried, or a predicate on the response. Default `[429, 503]`. 429 and 503 count as
   * throttles (reported to the limiter) whatever this says; others are retried with backoff only.
   */
  retryOn?: readonly number[] | ((response: Response) => boolean);
  /**
   * Retry-After values above this are capped to it, in ms (a finite number >= 0). Default
   * 3,600,000. A capped value longer than what is left of `maxElapsedMs` still ends the call at
   * once with the 429/503; the limiter's pause is bounded by `maxPauseMs` either way.
   */
  maxRetryAfterMs?: number;
  /** Called before each retry wait. */
  onRetry?: (info: RetryInfo<Response>) => void;
}

const THROTTLE_STATUSES = new Set([429, 503]);

/**
 * createRetryingFetch wraps `fetch` so every attempt is first admitted by the limiter, and a 429
 * or 503 is retried: after exactly its `Retry-After` (delta-seconds or HTTP-date; the limiter is
 * paused as long through `reportThrottle`, at most `maxPauseMs` — by default the call's remaining
 * budget), else (also for `Retry-After: 0`) after an exponential backoff with full jitter.
 * Every throttle is reported to the limiter. Other statuses and network errors pass straight
 * through. When attempts or `maxElapsedMs` run out, the last response is returned as is.
 * `init.signal` (or the Request's signal) ends any wait at once, rejecting with its reason.
 *
 * A retried request is sent again with the same `init`: use replayable bodies (string, Buffer,
 * URLSearchParams, FormData); a `Request` input is cloned per attempt.
 */
export function createRetryingFetch(options: RetryingFetchOptions): FetchLike {
  if (typeof options !== "object" || options === null) throw new ConfigError("createRetryingFetch(options)", options, "an options object");
  const { limiter } = options;
  if (typeof limiter?.acquire !== "function") throw new ConfigError("createRetryingFetch(options.limiter)", limiter, "a PartitionedRateLimiter");
  const fetchImpl = options.fetch ?? globalThis.fetch;
  if (typeof fetchImpl !== "function") throw new ConfigError("createRetryingFetch(options.fetch)", fetchImpl, "a fetch function");
  const cost = options.cost ?? 1;
  if (typeof cost !== "function" && (typeof cost !== "number" || !(cost > 0))) throw new ConfigError("createRetryingFetch(options.cost)", cost, "a number > 0 or a function of the request");
  const retryOn = options.retryOn ?? [429, 503];
  const retries = typeof retryOn === "function" ? retryOn : (response: Response) => retryOn.includes(response.status);
  const maxRetryAfterMs = options.maxRetryAfterMs === undefined ? 3_600_000 : finiteNumber("createRetryingFetch(options.maxRetryAfterMs)", options.maxRetryAfterMs, { min: 0 });
  if (options.onRetry !== undefined && typeof options.onRetry !== "function") throw new ConfigError("createRetryingFetch(options.onRetry)", options.onRetry, "a function");
  if (typeof retryOn !== "function" && (!Array.isArray(retryOn) || !retryOn.every((s) => Number.isInteger(s) && s >= 100 && s <= 599))) {
    throw new ConfigError("createRetryingFetch(options.retryOn)", retryOn, "an array of HTTP status codes (100-599) or a function of the response");
  }
  const policy = resolveRetryPolicy("createRetryingFetch", options);

  return (input, init) => {
    const signal = init?.signal ?? (input instanceof Request ? input.signal : undefined) ?? undefined;
    return retryWithLimiter<Response>(
      limiter,
      () => fetchImpl(input instanceof Request ? input.clone() : input, init),
      {
        ...policy,
        maxPauseMs: policy.maxPauseMs ?? undefined,
        cost: typeof cost === "function" ? cost(input, init) : cost,
        signal,
        onRetry: (info) => {
          // A retried response's body is never read: free its connection now.
          if (info.outcome.ok) info.outcome.value.body?.cancel().catch(() => undefined);
          options.onRetry?.(info);
        },
        classify: (outcome) => {
          if (!outcome.ok) return { retry: false };
          const response = outcome.value;
          const throttled = THROTTLE_STATUSES.has(response.status);
          if (!retries(response)) return { retry: false, throttled };
          const retryAfterMs = parseRetryAfter(response.headers.get("retry-after"), { maxMs: maxRetryAfterMs });
          return { retry: true, throttled, retryAfterMs };
        },
      },
    );
  };
}
