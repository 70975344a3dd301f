import { EventEmitter } from "node:events";
import { ConfigError } from "../errors/config-error.js";
import { CostExceedsLimitError } from "../errors/cost-exceeds-limit-error.js";
import { LimiterClosedError } from "../errors/limiter-closed-error.js";
import { QueueFullError } from "../errors/queue-full-error.js";
import { TimeoutError } from "../errors/timeout-error.js";
import type { TimerHandle } from "../contract/clock.js";
import { costToCount, countToUnits } from "../contract/units.js";
import { finiteNumber, optionalObject, optionalSignal } from "../contract/validate.js";
import { BusyMeter } from "./busy-meter.js";
import { DemandMeter } from "./demand-meter.js";
import type { PartitionedRateLimiterEvents } from "./events.js";
import { LeaseManager, type BackendHealth } from "./lease-manager.js";
import { resolveOptions, type PartitionedRateLimiterOptions, type ResolvedOptions } from "./options.js";
import { Pacer } from "./pacer.js";
import type { PlanConfig } from "./plan-config.js";
import { WaitQueue, type Waiter } from "./wait-queue.js";

/** Options of {@link PartitionedRateLimiter.acquire}. */
export interface AcquireOptions {
  /** Gives up waiting; the promise rejects with `signal.reason`. */
  signal?: AbortSignal;
  /** Gives up after this many ms with a TimeoutError (at once if it cannot be met). */
  timeoutMs?: number;
  /** Higher goes first (default 0); FIFO within a priority. */
  priority?: number;
}

/** Options of {@link PartitionedRateLimiter.schedule}. */
export interface ScheduleOptions extends AcquireOptions {
  /** Units the call costs (default 1). */
  cost?: number;
}

/** A snapshot of a limiter's state and counters, from {@link PartitionedRateLimiter.stats}. */
export interface LimiterStats {
  readonly resource: string;
  readonly holderId: string;
  /** The stored plan epoch in force; 0 before the plan was read from the backend. */
  readonly planEpoch: number;
  /** Partitions usable now. */
  readonly heldPartitions: number;
  /** Their indexes. */
  readonly partitions: readonly number[];
  /** Units per interval held now (held partitions × limit / partitions). */
  readonly capacity: number;
  /** Partitions this limiter wants, as it publishes them. */
  readonly wants: number;
  /** Its fair share of partitions, computed from every holder's published record. */
  readonly fairShare: number;
  /** Its weight and reserve, and how much of the reserve is honoured. */
  readonly weight: number;
  readonly reserve: number;
  readonly reserveHonoured: number;
  /** Live holders of the resource seen in the last heartbeat (this one included). */
  readonly holders: number;
  /** The adaptive pace factor (1 = full pace). */
  readonly rateFactor: number;
  /** ms left of a pause from a Retry-After, 0 if none. */
  readonly pausedForMs: number;
  /** Waiters queued and their units. */
  readonly queueLength: number;
  readonly queuedUnits: number;
  /** Admissions and their units. */
  readonly admitted: number;
  readonly admittedUnits: number;
  /** Admissions that had to wait in the queue. */
  readonly waited: number;
  /** tryAcquire calls refused. */
  readonly denied: number;
  /** Waiters refused or dropped because the queue was full. */
  readonly rejected: number;
  readonly dropped: number;
  /** Waiters that timed out or were aborted. */
  readonly timedOut: number;
  readonly aborted: number;
  /** Lease activity. */
  readonly leasesAcquired: number;
  readonly leasesRenewed: number;
  readonly leasesReleased: number;
  readonly leasesLost: number;
  /** Acquire attempts that found every candidate taken (contention). */
  readonly acquireMisses: number;
  readonly backendErrors: number;
  /** How the backend looks from here: state, failures in a row, the last error, a running grace. */
  readonly backend: BackendHealth;
  /** Throttles reported by the service. */
  readonly throttles: number;
  readonly closed: boolean;
}

/** Information given to {@link PartitionedRateLimiter.reportThrottle}. */
export interface ThrottleReport {
  /** The service's Retry-After in ms; admissions pause that long. */
  retryAfterMs?: number;
}

/**
 * PartitionedRateLimiter admits work against a quota shared by many processes: `limit` units per
 * `intervalMs`, split into `partitions` leased through a backend. Admission decisions are local
 * and in memory; the backend sees one heartbeat per holder per third of the lease TTL, plus
 * acquisitions, independent of the request rate.
 *
 * The promise: across all processes, admissions in any window of `intervalMs` never exceed
 * `limit`, through crashes, pauses, lost renewals, outages, backend restarts and wall-clock jumps
 * (docs/guarantee.md states the assumptions and the proof).
 */
export class PartitionedRateLimiter extends EventEmitter<PartitionedRateLimiterEvents> {
  private readonly o: ResolvedOptions;
  private readonly pacer: Pacer;
  private readonly queue = new WaitQueue();
  private meter: DemandMeter;
  private admittedMeter: DemandMeter;
  private busy: BusyMeter;
  private readonly manager: LeaseManager;
  private drainTimer: TimerHandle | undefined;
  private drainAt = Infinity;
  private closing: Promise<void> | null = null;
  private failure: unknown = null;
  private readonly onSignalAbort = () => void this.close();
  private counts = { admitted: 0, admittedUnits: 0, waited: 0, denied: 0, rejected: 0, dropped: 0, timedOut: 0, aborted: 0, throttles: 0 };

  /** Creates a limiter and starts taking leases in the background; throws ConfigError for bad options. */
  constructor(options: PartitionedRateLimiterOptions) {
    super();
    this.o = resolveOptions(options);
    const config = this.o.initialConfig;
    const intervalMs = config?.plan.intervalMs ?? 1_000;
    this.pacer = new Pacer(config?.intervalCount ?? 1, config?.sliceCount ?? 1);
    this.meter = new DemandMeter(intervalMs);
    this.admittedMeter = new DemandMeter(intervalMs);
    this.busy = new BusyMeter(intervalMs, this.o.clock.now());
    this.manager = new LeaseManager(this.o, this.pacer, {
      demand: (now) => ({
        wantedUnits: this.meter.total(now) + this.queue.queuedUnits,
        admittedUnits: this.admittedMeter.total(now),
        busyFraction: this.busy.fraction(now),
        headCount: this.queue.peek()?.count ?? 0,
      }),
      hasWaiters: () => this.queue.length > 0,
      capacityChanged: () => this.drain(),
      planAdopted: (next) => this.planAdopted(next),
      planFailed: (error) => this.fail(error),
      events: this,
    });
    if (this.o.signal?.aborted) {
      this.closing = Promise.resolve();
      return;
    }
    this.o.signal?.addEventListener("abort", this.onSignalAbort, { once: true });
    this.manager.start();
  }

  /** The resource name. */
  get resource(): string {
    return this.o.resource;
  }

  /** The quota's `limit` in force (the stored plan's once read): units allowed in any window of {@link intervalMs}. NaN while following with no plan seen yet. */
  get limit(): number {
    return this.manager.current?.plan.limit ?? NaN;
  }

  /** The quota's window in ms (NaN while following with no plan seen yet). */
  get intervalMs(): number {
    return this.manager.current?.plan.intervalMs ?? NaN;
  }

  /** This instance's holder id in the backend. */
  get holderId(): string {
    return this.o.holderId;
  }

  /** Units per interval held right now: usable partitions × `limit / partitions`. */
  get capacity(): number {
    const config = this.manager.current;
    if (!config) return 0;
    const now = this.o.clock.now();
    let usable = 0;
    for (const p of this.pacer.partitions) if (p.usable(now)) usable++;
    return usable * config.partitionCapacity;
  }

  /**
   * Admits `cost` units (default 1) now if held capacity allows, without waiting and without any
   * network call. False when there is no room now (or others are queued ahead): "no capacity" is
   * a value. Throws ConfigError for a cost that is not a finite number > 0,
   * CostExceedsLimitError for a cost that can never pass, and LimiterClosedError after close.
   */
  tryAcquire(cost = 1): boolean {
    const count = this.checkCost(cost, "tryAcquire(cost)");
    if (this.closing) throw this.closedError();
    const now = this.o.clock.now();
    if (count !== null && this.queue.length === 0 && this.pacer.tryTake(count, now)) {
      this.admitted(cost, now, now);
      return true;
    }
    this.counts.denied++;
    this.meter.record(cost, now);
    this.manager.wake(now);
    return false;
  }

  /**
   * Resolves when `cost` units (default 1) are admitted. Waits in a bounded priority queue.
   * Rejects with the signal's reason on abort, TimeoutError after `timeoutMs` (at once when even
   * all the capacity this limiter may hold could not admit it in time; with the backend's failure
   * as `cause` when it is failing), QueueFullError when the queue is full,
   * CostExceedsLimitError, ConfigError or LimiterClosedError.
   */
  acquire(cost = 1, options?: AcquireOptions): Promise<void> {
    try {
      const count = this.checkCost(cost, "acquire(cost)");
      const opts = optionalObject("acquire(options)", options);
      const signal = optionalSignal("acquire(options.signal)", opts.signal);
      const timeoutMs = opts.timeoutMs === undefined ? undefined : finiteNumber("acquire(options.timeoutMs)", opts.timeoutMs, { min: 0 });
      const priority = opts.priority === undefined ? 0 : finiteNumber("acquire(options.priority)", opts.priority);
      if (this.closing) return Promise.reject(this.closedError());
      if (signal?.aborted) return Promise.reject(signal.reason);
      const now = this.o.clock.now();
      if (count !== null && this.queue.length === 0 && this.pacer.tryTake(count, now)) {
        this.admitted(cost, now, now);
        return Promise.resolve();
      }
      return this.enqueue(cost, count ?? 0, now, signal, timeoutMs, priority);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Runs `fn` once `options.cost` units (default 1) are admitted; resolves or rejects with its result. */
  async schedule<T>(fn: () => T | PromiseLike<T>, options?: ScheduleOptions): Promise<T> {
    if (typeof fn !== "function") throw new ConfigError("schedule(fn)", fn, "a function");
    const opts = optionalObject("schedule(options)", options);
    // Only a missing cost means 1: a plain-JS caller passing null gets a ConfigError, as from acquire().
    await this.acquire(opts.cost === undefined ? 1 : (opts.cost as number), opts as AcquireOptions);
    return fn();
  }

  /**
   * Tells the limiter the service throttled a request. Emits `"throttled"`; with `retryAfterMs`,
   * admissions pause that long. Adaptive control (see `AdaptiveRateController`) listens to it.
   */
  reportThrottle(report: ThrottleReport = {}): void {
    const opts = optionalObject("reportThrottle(report)", report);
    const retryAfterMs = opts.retryAfterMs === undefined ? null : finiteNumber("reportThrottle(report.retryAfterMs)", opts.retryAfterMs, { min: 0 });
    this.counts.throttles++;
    if (retryAfterMs !== null && retryAfterMs > 0) this.pauseFor(retryAfterMs);
    this.emit("throttled", { retryAfterMs });
  }

  /** Admits nothing for `ms` milliseconds (a Retry-After). Pauses only ever lengthen. */
  pauseFor(ms: number): void {
    const duration = finiteNumber("pauseFor(ms)", ms, { min: 0 });
    this.pacer.pauseUntil(this.o.clock.now() + duration);
    this.drain();
  }

  /**
   * Scales the pace to `factor` × held capacity (0 < factor ≤ 1), for adaptive slow-down. Lowering
   * it is always safe; it never raises the pace above what is held.
   */
  setRateFactor(factor: number): void {
    const f = finiteNumber("setRateFactor(factor)", factor, { min: 0, minExclusive: true, max: 1 });
    this.pacer.setRateFactor(f, this.o.clock.now());
    this.drain();
  }

  /** A snapshot of state and counters. */
  stats(): LimiterStats {
    const now = this.o.clock.now();
    const config = this.manager.current;
    const usable = this.pacer.partitions.filter((p) => p.usable(now));
    const c = this.counts;
    const m = this.manager.counters;
    const share = this.manager.shareView();
    return {
      resource: this.o.resource,
      holderId: this.o.holderId,
      planEpoch: config?.epoch ?? 0,
      heldPartitions: usable.length,
      partitions: usable.map((p) => p.partition).sort((a, b) => a - b),
      capacity: usable.length * (config?.partitionCapacity ?? 0),
      wants: share.wants,
      fairShare: share.share,
      weight: this.o.weight,
      reserve: config?.reserve ?? this.o.settings.reserve,
      reserveHonoured: share.reserved,
      holders: share.holders,
      rateFactor: this.pacer.factor,
      pausedForMs: Math.max(0, this.pacer.pauseEnd - now),
      queueLength: this.queue.length,
      queuedUnits: this.queue.queuedUnits,
      admitted: c.admitted,
      admittedUnits: c.admittedUnits,
      waited: c.waited,
      denied: c.denied,
      rejected: c.rejected,
      dropped: c.dropped,
      timedOut: c.timedOut,
      aborted: c.aborted,
      leasesAcquired: m.acquired,
      leasesRenewed: m.renewed,
      leasesReleased: m.released,
      leasesLost: m.lost,
      acquireMisses: m.acquireMisses,
      backendErrors: m.backendErrors,
      backend: this.manager.health(now),
      throttles: c.throttles,
      closed: this.closing !== null,
    };
  }

  /**
   * Stops admitting, rejects waiters with LimiterClosedError, and releases every lease once its
   * last slice has passed (at most one slice, about `intervalMs / slicesPerInterval`). Leaves no
   * timer behind. Idempotent. The backend is not closed: it may be shared.
   */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.o.signal?.removeEventListener("abort", this.onSignalAbort);
    const error = this.closedError();
    this.closing = this.manager.close();
    this.clearDrainTimer();
    for (const waiter of this.queue.drainAll()) {
      waiter.cleanup();
      waiter.reject(error);
    }
    this.busy.set(false, this.o.clock.now());
    return this.closing;
  }

  private closedError(): unknown {
    return this.failure ?? new LimiterClosedError(this.o.resource);
  }

  private fail(error: unknown): void {
    this.failure = error;
    void this.close();
  }

  /** A new plan (epoch) is in force: recount what waits in its units, refuse what can never pass. */
  private planAdopted(config: PlanConfig): void {
    this.pacer.setLimits(config.intervalCount, config.sliceCount);
    if (this.meter.intervalMs !== config.plan.intervalMs) {
      // Demand is measured per interval of the plan in force.
      this.meter = new DemandMeter(config.plan.intervalMs);
      this.admittedMeter = new DemandMeter(config.plan.intervalMs);
      this.busy = new BusyMeter(config.plan.intervalMs, this.o.clock.now());
    }
    this.queue.recount((cost) => costToCount(cost, config.scale));
    for (const waiter of this.queue.drainAll()) {
      if (waiter.count > config.maxCount) {
        waiter.cleanup();
        waiter.reject(new CostExceedsLimitError(waiter.cost, countToUnits(config.maxCount, config.scale)));
      } else {
        this.queue.push(waiter);
      }
    }
    this.busy.set(this.queue.length > 0, this.o.clock.now());
    this.drain();
  }

  /** The cost in counting units of the plan in force; null while no plan is known yet (following). */
  private checkCost(cost: unknown, option: string): number | null {
    if (typeof cost !== "number" || !(cost > 0) || cost === Infinity) {
      throw new ConfigError(option, cost, "a finite number > 0");
    }
    const config = this.manager.current;
    if (!config) return null;
    const count = costToCount(cost, config.scale);
    if (count > config.maxCount) throw new CostExceedsLimitError(cost, countToUnits(config.maxCount, config.scale));
    return count;
  }

  private admitted(cost: number, now: number, since: number): void {
    this.counts.admitted++;
    this.counts.admittedUnits += cost;
    this.meter.record(cost, now);
    this.admittedMeter.record(cost, now);
    // Checked first so the hot path builds no payload when nobody (e.g. metrics) listens.
    if (this.listenerCount("admitted") > 0) this.emit("admitted", { cost, waitedMs: now - since });
  }

  private enqueue(cost: number, count: number, now: number, signal: AbortSignal | undefined, timeoutMs: number | undefined, priority: number): Promise<void> {
    const config = this.manager.current;
    if (timeoutMs !== undefined && this.pacer.pauseEnd - now > timeoutMs) {
      // Nothing is admitted before the pause ends: a wait that cannot end in time fails at once.
      this.counts.timedOut++;
      return Promise.reject(new TimeoutError("acquire", timeoutMs, `admissions are paused for ${Math.ceil(this.pacer.pauseEnd - now)} ms more (a Retry-After)`));
    }
    if (timeoutMs !== undefined && config) {
      // Even holding every partition it may, the limiter admits at most maxCount per slice.
      const ahead = this.queue.queuedCount + count;
      const slicesNeeded = Math.ceil(ahead / config.maxCount) - 1;
      if (slicesNeeded * config.sliceMs > timeoutMs) {
        this.counts.timedOut++;
        return Promise.reject(new TimeoutError("acquire", timeoutMs, `${countToUnits(ahead, config.scale)} units are queued; the fastest this limiter can admit them takes ${Math.ceil(slicesNeeded * config.sliceMs)} ms`));
      }
    }
    if (this.queue.length >= this.o.maxQueued) {
      const victim = this.o.queuePolicy === "drop-oldest" ? this.queue.lowestOldest() : undefined;
      if (!victim || victim.priority > priority || this.o.maxQueued === 0) {
        this.counts.rejected++;
        return Promise.reject(new QueueFullError(this.o.maxQueued));
      }
      this.queue.remove(victim);
      victim.cleanup();
      this.counts.dropped++;
      victim.reject(new QueueFullError(this.o.maxQueued, true));
    }
    return new Promise<void>((resolve, reject) => {
      let timer: TimerHandle | undefined;
      const onAbort = () => {
        if (this.queue.remove(waiter)) {
          waiter.cleanup();
          this.counts.aborted++;
          reject(signal!.reason);
          this.drain();
        }
      };
      const waiter: Waiter = {
        cost,
        count,
        priority,
        enqueuedAt: now,
        resolve,
        reject,
        cleanup: () => {
          if (timer !== undefined) this.o.clock.clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
        },
      };
      if (timeoutMs !== undefined) {
        timer = this.o.clock.setTimeout(() => {
          timer = undefined;
          if (this.queue.remove(waiter)) {
            waiter.cleanup();
            this.counts.timedOut++;
            reject(this.timeoutError(timeoutMs));
            this.drain();
          }
        }, timeoutMs);
      }
      signal?.addEventListener("abort", onAbort, { once: true });
      this.queue.push(waiter);
      this.busy.set(true, now);
      this.manager.refreshKeepAlive();
      this.manager.wake(now);
      this.drain();
    });
  }

  /** A TimeoutError that says why capacity was missing: a failing backend (as `cause`), a grace, a pause, others holding it. */
  private timeoutError(timeoutMs: number): TimeoutError {
    const now = this.o.clock.now();
    const health = this.manager.health(now);
    const config = this.manager.current;
    const held = this.pacer.partitions.filter((p) => p.usable(now)).length;
    if (health.state === "failing") {
      const last = health.lastError;
      return new TimeoutError(
        "acquire",
        timeoutMs,
        `${held} partitions held; the ${this.o.backend.name} backend failed ${health.consecutiveFailures} times in a row: ${last instanceof Error ? last.message : String(last)}`,
        { cause: last },
      );
    }
    if (health.graceRemainingMs > 0) {
      return new TimeoutError("acquire", timeoutMs, `the backend grants no lease for ${Math.ceil(health.graceRemainingMs)} ms more: a grace period after a new plan, a plan change or a backend restart`);
    }
    if (health.state === "no-plan") return new TimeoutError("acquire", timeoutMs, `no plan is stored for "${this.o.resource}" yet (followPlan)`);
    if (this.pacer.pauseEnd > now) return new TimeoutError("acquire", timeoutMs, `admissions are paused for ${Math.ceil(this.pacer.pauseEnd - now)} ms more (a Retry-After)`);
    const share = this.manager.shareView();
    return new TimeoutError(
      "acquire",
      timeoutMs,
      `${held} of ${config?.plan.partitions ?? "?"} partitions held, fair share ${share.share}, ${this.queue.length} waiters queued`,
    );
  }

  /** Admits queued waiters in order while capacity allows; sets one timer for when it next may. */
  private drain(): void {
    if (this.closing) return;
    const now = this.o.clock.now();
    if (!this.manager.current) return;
    let head = this.queue.peek();
    while (head && this.pacer.tryTake(head.count, now)) {
      this.queue.shift();
      head.cleanup();
      this.admitted(head.cost, now, head.enqueuedAt);
      this.counts.waited++;
      head.resolve();
      head = this.queue.peek();
    }
    if (!head) {
      this.busy.set(false, now);
      this.clearDrainTimer();
      this.manager.refreshKeepAlive();
      return;
    }
    this.manager.wake(now);
    let at = this.pacer.nextAdmissionAt(head.count, now);
    if (at === Infinity) {
      // During a pause, held leases are judged at the pause's end, past deadlines that renewals
      // will move: look again then. Otherwise nothing held can admit it, and the lease manager
      // calls back when capacity arrives.
      if (this.pacer.pauseEnd <= now) {
        this.clearDrainTimer();
        return;
      }
      at = this.pacer.pauseEnd;
    }
    // Waking for every admission of a smooth pace would cost a timer each; an eighth of a slice
    // lets tokens for several waiters build up (admitting later is always safe), but not past a
    // refilling bucket's fill, which would waste its refill. The estimate rounds refills as the
    // decision does; a microsecond past it absorbs float error in `now + delay`. An estimate at or
    // before now did not admit: look again an eighth of a slice later, not in a spin.
    const batchMs = (this.manager.current?.sliceMs ?? 8) / 8;
    const delay = at > now ? Math.max(at - now + 0.001, Math.min(batchMs, this.pacer.fullBucketLeadMs(now))) : batchMs;
    if (this.drainTimer !== undefined && this.drainAt <= now + delay) return;
    this.clearDrainTimer();
    this.drainAt = now + delay;
    this.drainTimer = this.o.clock.setTimeout(() => {
      this.drainTimer = undefined;
      this.drainAt = Infinity;
      this.drain();
    }, delay);
  }

  private clearDrainTimer(): void {
    if (this.drainTimer !== undefined) this.o.clock.clearTimeout(this.drainTimer);
    this.drainTimer = undefined;
    this.drainAt = Infinity;
  }
}
