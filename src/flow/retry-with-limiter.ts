import { ConfigError } from "../errors/config-error.js";
import { TimeoutError } from "../errors/timeout-error.js";
import { systemClock, type Clock } from "../contract/clock.js";
import type { PartitionedRateLimiter } from "../limiter/partitioned-rate-limiter.js";
import { finiteNumber, optionalSignal } from "../contract/validate.js";
import { abortableDelay } from "./abortable-delay.js";
import { fullJitterBackoff } from "./full-jitter-backoff.js";

/** AttemptOutcome is what one attempt of {@link retryWithLimiter} produced: a value or an error. */
export type AttemptOutcome<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: unknown };

/** RetryDecision tells {@link retryWithLimiter} what to make of one attempt's outcome. */
export interface RetryDecision {
  /** Try again (within `maxAttempts` and `maxElapsedMs`). */
  readonly retry: boolean;
  /** The service pushed back (a 429 or 503): reported to the limiter with `reportThrottle`. */
  readonly throttled?: boolean;
  /** The service's Retry-After in ms: the wait before the next attempt instead of a backoff. */
  readonly retryAfterMs?: number | null;
}

/** RetryInfo describes one retry about to wait, for {@link RetryOptions.onRetry}. */
export interface RetryInfo<T> {
  /** The attempt that failed (1-based). */
  readonly attempt: number;
  /** How long the client waits before the next attempt, in ms. */
  readonly delayMs: number;
  /** Whether the wait comes from the service's Retry-After (else from backoff). */
  readonly fromRetryAfter: boolean;
  readonly outcome: AttemptOutcome<T>;
}

/** RetryPolicyOptions are the retry bounds shared by {@link retryWithLimiter} and `createRetryingFetch`. */
export interface RetryPolicyOptions {
  /** Attempts in all, the first included (1-100). Default 5. */
  maxAttempts?: number;
  /**
   * Total time budget in ms, from the call to the last attempt's start, waits in the limiter
   * included. A wait that would end past it is not started: the last outcome is returned at once.
   * Default 60,000.
   */
  maxElapsedMs?: number;
  /** First backoff ceiling in ms; it doubles per retry. Default 100. */
  baseDelayMs?: number;
  /** Largest backoff ceiling in ms (a Retry-After is honoured beyond it, within `maxElapsedMs`). Default 10,000. */
  maxDelayMs?: number;
  /**
   * The longest one throttle of this call pauses the limiter (and so every other caller of it),
   * in ms. Default: what is left of this call's `maxElapsedMs` when the throttle arrives, so a
   * `Retry-After: 3600` answered to a call with a 60 s budget pauses the limiter for at most 60 s.
   * 0 never pauses (the throttle is still reported, for adaptive control).
   */
  maxPauseMs?: number;
  /** Clock for waits and the time budget. Default `systemClock`. */
  clock?: Clock;
  /** Random source in [0, 1) for the jitter. Default `Math.random`. */
  random?: () => number;
}

/** RetryOptions are the options of {@link retryWithLimiter}. */
export interface RetryOptions<T> extends RetryPolicyOptions {
  /** Units each attempt costs in the limiter. Default 1. */
  cost?: number;
  /** Ends limiter waits, backoff waits and (through `fn`'s argument) the attempt; rejects with `signal.reason`. */
  signal?: AbortSignal;
  /** Limiter queue priority of each attempt. Default 0. */
  priority?: number;
  /**
   * Decides whether an outcome is retried. Default: values are final; an error is retried only
   * when it has a numeric `status` (or `statusCode`) of 429 or 503, as a throttle, with its
   * numeric `retryAfterMs` property if any. Other errors pass straight through.
   */
  classify?: (outcome: AttemptOutcome<T>, attempt: number) => RetryDecision;
  /** Called before each retry wait (logging, metrics). */
  onRetry?: (info: RetryInfo<T>) => void;
}

/** The policy after validation and defaults. */
export interface ResolvedRetryPolicy {
  readonly maxAttempts: number;
  readonly maxElapsedMs: number;
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  /** null: the remaining time budget. */
  readonly maxPauseMs: number | null;
  readonly clock: Clock;
  readonly random: () => number;
}

/** resolveRetryPolicy validates retry bounds, naming the option in every ConfigError. */
export function resolveRetryPolicy(where: string, o: RetryPolicyOptions): ResolvedRetryPolicy {
  const num = (name: keyof RetryPolicyOptions, fallback: number, range: Parameters<typeof finiteNumber>[2]) =>
    o[name] === undefined ? fallback : finiteNumber(`${where}(options.${name})`, o[name], range);
  const maxAttempts = num("maxAttempts", 5, { min: 1, max: 100, integer: true });
  const maxElapsedMs = num("maxElapsedMs", 60_000, { min: 0 });
  const baseDelayMs = num("baseDelayMs", 100, { min: 0 });
  const maxDelayMs = num("maxDelayMs", 10_000, { min: baseDelayMs });
  const maxPauseMs = o.maxPauseMs === undefined ? null : finiteNumber(`${where}(options.maxPauseMs)`, o.maxPauseMs, { min: 0 });
  if (o.random !== undefined && typeof o.random !== "function") throw new ConfigError(`${where}(options.random)`, o.random, "a function returning a number in [0, 1)");
  if (o.clock !== undefined && (typeof o.clock?.now !== "function" || typeof o.clock.setTimeout !== "function")) throw new ConfigError(`${where}(options.clock)`, o.clock, "a Clock (now, setTimeout, clearTimeout)");
  return { maxAttempts, maxElapsedMs, baseDelayMs, maxDelayMs, maxPauseMs, clock: o.clock ?? systemClock, random: o.random ?? Math.random };
}

/**
 * retryWithLimiter runs `fn` with every attempt first admitted by `limiter`, retrying throttled
 * outcomes: a Retry-After is waited out exactly (and pauses the limiter through
 * `reportThrottle`, for at most `maxPauseMs`: by default what is left of this call's budget),
 * otherwise — also for `Retry-After: 0` — the wait is an exponential backoff with full jitter.
 * Every throttle is reported to the limiter, so adaptive control sees it. Attempts are bounded by
 * `maxAttempts` and time by `maxElapsedMs`; when either runs out, or a Retry-After would end past
 * the budget, the last outcome is returned at once (or its error thrown). An abort ends any wait
 * at once with `signal.reason`. `fn` receives the 1-based attempt number and the signal.
 */
export async function retryWithLimiter<T>(
  limiter: PartitionedRateLimiter,
  fn: (attempt: number, signal: AbortSignal | undefined) => Promise<T>,
  options: RetryOptions<T> = {},
): Promise<T> {
  if (typeof fn !== "function") throw new ConfigError("retryWithLimiter(fn)", fn, "a function");
  const policy = resolveRetryPolicy("retryWithLimiter", options);
  const signal = optionalSignal("retryWithLimiter(options.signal)", options.signal);
  const classify = options.classify ?? defaultClassify;
  const cost = options.cost ?? 1;
  const { clock } = policy;
  const start = clock.now();
  let last: AttemptOutcome<T> | null = null;
  for (let attempt = 1; ; attempt++) {
    const remaining = policy.maxElapsedMs - (clock.now() - start);
    try {
      await limiter.acquire(cost, { signal, timeoutMs: Math.max(0, remaining), priority: options.priority ?? 0 });
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      // Out of time while queued: the service's own answer says more than our timeout.
      if (last !== null && TimeoutError.is(error)) return settle(last);
      throw error;
    }
    let outcome: AttemptOutcome<T>;
    try {
      outcome = { ok: true, value: await fn(attempt, signal) };
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      outcome = { ok: false, error };
    }
    last = outcome;
    const decision = classify(outcome, attempt);
    const asked = decision.retryAfterMs;
    // "Retry-After: 0" (or a date already past) says "now", which is no reason to skip the backoff.
    const retryAfterMs = typeof asked === "number" && asked > 0 && !Number.isNaN(asked) ? asked : null;
    if (decision.throttled) {
      // The pause stops every caller of the limiter: never longer than this call is prepared to wait.
      const left = Math.max(0, policy.maxElapsedMs - (clock.now() - start));
      const pauseMs = retryAfterMs === null ? 0 : Math.min(retryAfterMs, policy.maxPauseMs ?? left);
      limiter.reportThrottle(pauseMs > 0 ? { retryAfterMs: pauseMs } : {});
    }
    if (!decision.retry || attempt >= policy.maxAttempts) return settle(outcome);
    const delayMs = retryAfterMs ?? fullJitterBackoff(attempt - 1, policy.baseDelayMs, policy.maxDelayMs, policy.random);
    if (clock.now() - start + delayMs > policy.maxElapsedMs) return settle(outcome);
    options.onRetry?.({ attempt, delayMs, fromRetryAfter: retryAfterMs !== null, outcome });
    await abortableDelay(delayMs, signal, clock);
  }
}

function settle<T>(outcome: AttemptOutcome<T>): T {
  if (outcome.ok) return outcome.value;
  throw outcome.error;
}

function defaultClassify(outcome: AttemptOutcome<unknown>): RetryDecision {
  if (outcome.ok || typeof outcome.error !== "object" || outcome.error === null) return { retry: false };
  const e = outcome.error as { status?: unknown; statusCode?: unknown; retryAfterMs?: unknown };
  const status = e.status ?? e.statusCode;
  if (status !== 429 && status !== 503) return { retry: false };
  const retryAfterMs = typeof e.retryAfterMs === "number" && e.retryAfterMs >= 0 ? e.retryAfterMs : null;
  return { retry: true, throttled: true, retryAfterMs };
}
