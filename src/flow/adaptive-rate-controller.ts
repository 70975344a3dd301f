import { EventEmitter } from "node:events";
import { ConfigError } from "../errors/config-error.js";
import { systemClock, type Clock, type TimerHandle } from "../contract/clock.js";
import type { ThrottledEvent } from "../limiter/events.js";
import type { PartitionedRateLimiter } from "../limiter/partitioned-rate-limiter.js";
import { finiteNumber } from "../contract/validate.js";

/** AdaptiveRateControllerOptions are the options of {@link AdaptiveRateController}. Times in ms. */
export interface AdaptiveRateControllerOptions {
  /** The limiter whose rate factor is steered; its `"throttled"` events drive the controller. */
  limiter: PartitionedRateLimiter;
  /** Multiplies the factor on a decrease, in (0, 1). Default 0.7. */
  decreaseFactor?: number;
  /** The factor never goes below this, in (0, 1]. Default 0.05. */
  minFactor?: number;
  /** Added to the factor per quiet interval, in (0, 1]. Default 0.05. */
  increaseStep?: number;
  /**
   * The control period: throttles are counted over the last `intervalMs`, at most one decrease
   * happens per `intervalMs` (replies to requests sent before a decrease are still arriving), and
   * recovery adds one step per quiet `intervalMs`. Default 1,000.
   */
  intervalMs?: number;
  /**
   * Throttles per `intervalMs` that are expected and ignored (e.g. from other clients' bursts).
   * One more triggers a decrease. Default 0.
   */
  toleratedThrottles?: number;
  /** Clock for the control period. Default the system clock; a VirtualClock in tests. */
  clock?: Clock;
}

/** RateFactorChange is the payload of the controller's `"change"` event. */
export interface RateFactorChange {
  readonly factor: number;
  readonly previous: number;
  /** `"decrease"` after throttles, `"increase"` after a quiet interval. */
  readonly reason: "decrease" | "increase";
}

/** AdaptiveRateControllerStats is a snapshot from {@link AdaptiveRateController.stats}. */
export interface AdaptiveRateControllerStats {
  /** The rate factor set on the limiter now. */
  readonly factor: number;
  /** Throttles heard in all. */
  readonly throttles: number;
  readonly decreases: number;
  readonly increases: number;
  readonly closed: boolean;
}

/** The events of an {@link AdaptiveRateController}, name → listener arguments. */
export interface AdaptiveRateControllerEvents {
  change: [RateFactorChange];
}

/**
 * AdaptiveRateController steers a limiter's pace with AIMD, as TCP does: when the service
 * throttles more than `toleratedThrottles` per `intervalMs` (the limiter's `"throttled"` events,
 * which `reportThrottle` and the retrying clients emit), it multiplies the limiter's rate factor
 * by `decreaseFactor` (not below `minFactor`); after each `intervalMs` without that, it adds
 * `increaseStep`, never above 1, so the pace never exceeds the held capacity. Retry-After pauses
 * stay with the limiter (`reportThrottle` applies them). Its timer runs only while the factor is
 * below 1 and never keeps the process alive. `close()` stops it and leaves the factor as it is.
 */
export class AdaptiveRateController extends EventEmitter<AdaptiveRateControllerEvents> {
  private readonly limiter: PartitionedRateLimiter;
  private readonly decreaseFactor: number;
  private readonly minFactor: number;
  private readonly increaseStep: number;
  private readonly intervalMs: number;
  private readonly tolerated: number;
  private readonly clock: Clock;
  private current: number;
  // The newest (tolerated + 1) throttle times: enough to tell whether the tolerance was exceeded.
  private recent: number[] = [];
  private lastDecreaseAt = -Infinity;
  private timer: TimerHandle | undefined;
  private closed = false;
  private counts = { throttles: 0, decreases: 0, increases: 0 };
  private readonly onThrottled = (_event: ThrottledEvent) => this.throttled();

  /** Creates a controller and attaches it to `options.limiter`; throws ConfigError for bad options. */
  constructor(options: AdaptiveRateControllerOptions) {
    super();
    if (typeof options !== "object" || options === null) throw new ConfigError("AdaptiveRateController(options)", options, "an options object");
    const { limiter } = options;
    if (typeof limiter?.setRateFactor !== "function") throw new ConfigError("AdaptiveRateController(options.limiter)", limiter, "a PartitionedRateLimiter");
    const opt = (name: keyof AdaptiveRateControllerOptions, fallback: number, range: Parameters<typeof finiteNumber>[2]) =>
      options[name] === undefined ? fallback : finiteNumber(`AdaptiveRateController(options.${name})`, options[name], range);
    this.limiter = limiter;
    this.decreaseFactor = opt("decreaseFactor", 0.7, { min: 0, minExclusive: true, max: 0.999 });
    this.minFactor = opt("minFactor", 0.05, { min: 0, minExclusive: true, max: 1 });
    this.increaseStep = opt("increaseStep", 0.05, { min: 0, minExclusive: true, max: 1 });
    this.intervalMs = opt("intervalMs", 1000, { min: 1 });
    this.tolerated = opt("toleratedThrottles", 0, { min: 0, integer: true });
    this.clock = options.clock ?? systemClock;
    this.current = limiter.stats().rateFactor;
    limiter.on("throttled", this.onThrottled);
    this.schedule();
  }

  /** The rate factor this controller has set on the limiter. */
  get factor(): number {
    return this.current;
  }

  /** A snapshot of the factor and counters. */
  stats(): AdaptiveRateControllerStats {
    return { factor: this.current, ...this.counts, closed: this.closed };
  }

  /** Detaches from the limiter and stops the timer. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.limiter.off("throttled", this.onThrottled);
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }

  private throttled(): void {
    if (this.closed) return;
    const now = this.clock.now();
    this.counts.throttles++;
    this.recent.push(now);
    if (this.recent.length > this.tolerated + 1) this.recent.shift();
    if (!this.overTolerance(now) || now - this.lastDecreaseAt < this.intervalMs) return;
    this.lastDecreaseAt = now;
    this.recent = [];
    this.set(Math.max(this.minFactor, this.current * this.decreaseFactor), "decrease");
    this.counts.decreases++;
  }

  private overTolerance(now: number): boolean {
    const oldest = this.recent[0];
    return this.recent.length > this.tolerated && oldest !== undefined && now - oldest < this.intervalMs;
  }

  private tick(): void {
    this.timer = undefined;
    if (this.closed) return;
    const now = this.clock.now();
    const quiet = now - this.lastDecreaseAt >= this.intervalMs && !this.overTolerance(now);
    if (quiet && this.current < 1) {
      // Rounded so repeated steps land on 1 exactly instead of 0.9999999.
      this.set(Math.min(1, Math.round((this.current + this.increaseStep) * 1e9) / 1e9), "increase");
      this.counts.increases++;
    }
    this.schedule();
  }

  private set(factor: number, reason: RateFactorChange["reason"]): void {
    const previous = this.current;
    if (factor === previous) return;
    this.current = factor;
    // A closed limiter refuses nothing here: setRateFactor only scales the local pace.
    this.limiter.setRateFactor(factor);
    this.emit("change", { factor, previous, reason });
    this.schedule();
  }

  private schedule(): void {
    if (this.closed || this.timer !== undefined || this.current >= 1) return;
    this.timer = this.clock.setTimeout(() => this.tick(), this.intervalMs, false);
  }
}
