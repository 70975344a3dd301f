import { PlanMismatchError } from "../errors/plan-mismatch-error.js";
import { PlanMissingError } from "../errors/plan-missing-error.js";
import { ConfigError } from "../errors/config-error.js";
import type { Lease } from "../contract/lease-backend.js";
import type { TimerHandle } from "../contract/clock.js";
import { HeldPartition } from "./held-partition.js";
import type { PartitionedRateLimiterEvents, ReleaseReason } from "./events.js";
import type { ResolvedOptions } from "./options.js";
import type { Pacer } from "./pacer.js";
import { UNIT_SCALE } from "../contract/units.js";

/** What the lease manager needs from the limiter around it. */
export interface LeaseManagerHost {
  /** Micro-units wanted over the last interval, queued ones included. */
  wantedMicro(now: number): number;
  /** Micro-units of the first waiter in line, 0 if none: it needs at least that much per slice. */
  headMicro(): number;
  /** Whether callers are waiting (timers then keep the process alive). */
  hasWaiters(): boolean;
  /** Held capacity changed: try the queue again. */
  capacityChanged(): void;
  /** The stored plan disagrees: the limiter cannot run. */
  planFailed(error: unknown): void;
  emit<K extends keyof PartitionedRateLimiterEvents>(event: K, ...args: PartitionedRateLimiterEvents[K]): void;
}

/** Counters of lease activity, for stats and metrics. */
export interface LeaseCounters {
  acquired: number;
  renewed: number;
  released: number;
  lost: number;
  backendErrors: number;
}

interface Retiring {
  held: HeldPartition;
  reason: ReleaseReason | null;
  quietAt: number;
  releasing: boolean;
}

type Operation = "ensurePlan" | "tryAcquire" | "renew" | "release";

/** Extra demand kept as headroom when sizing how many partitions to hold. */
const HEADROOM = 1.25;

/**
 * LeaseManager owns all lease timing: it stores or checks the plan, acquires partitions on
 * demand (own pool first, random order), renews each about every third of the TTL, and gives
 * partitions back only after they have been quiet for a full slice, so that the next holder,
 * who starts with an empty history, cannot stack its first slice onto this one's last.
 */
export class LeaseManager {
  /** Lease activity so far. */
  readonly counters: LeaseCounters = { acquired: 0, renewed: 0, released: 0, lost: 0, backendErrors: 0 };
  private timer: TimerHandle | undefined;
  private timerAt = Infinity;
  private timerKeepsAlive = false;
  private planReady = false;
  private planInFlight = false;
  private planRetryAt = -Infinity;
  private planFailures = 0;
  private acquireInFlight: Promise<void> | null = null;
  private acquireRetryAt = -Infinity;
  private acquireFailures = 0;
  private desired = 0;
  private surplusSince: number | null = null;
  private lastWakeAt = -Infinity;
  private readonly retiring: Retiring[] = [];
  private readonly inFlight = new Set<Promise<unknown>>();
  private closed = false;
  private readonly quietMs: number;
  private readonly hysteresisMs: number;
  private readonly maxBackoffMs: number;
  private readonly renewRetryMs: number;

  constructor(private readonly o: ResolvedOptions, private readonly pacer: Pacer, private readonly host: LeaseManagerHost) {
    // A released partition's next holder may admit at once; wait out our last slice first,
    // stretched by the allowed clock drift.
    this.quietMs = o.sliceMs * (1 + o.driftFactor) + 1;
    this.hysteresisMs = Math.max(3 * o.plan.intervalMs, 2_000);
    this.maxBackoffMs = Math.max(50, Math.min(1_000, o.leaseTtlMs / 4));
    this.renewRetryMs = Math.max(50, Math.min(o.renewEveryMs, o.leaseTtlMs / 10));
  }

  /** Starts the loop: stores or checks the plan, then takes `minPartitions`. */
  start(): void {
    this.schedule(this.o.clock.now());
  }

  /** Partitions given up but not yet released (they are excluded from new acquisitions). */
  get retiringCount(): number {
    return this.retiring.length;
  }

  /**
   * Demand rose (a waiter queued, a tryAcquire was refused): run the loop soon, at most once per
   * half slice so a refused hot loop does not spin timers.
   */
  wake(now: number): void {
    if (this.closed || this.acquireInFlight || now < this.acquireRetryAt || this.timerAt <= now) return;
    if (now - this.lastWakeAt < this.o.sliceMs / 2) return;
    if (this.pacer.partitions.length >= this.o.maxPartitions) return;
    this.lastWakeAt = now;
    this.schedule(now);
  }

  /** Re-evaluates the keep-alive of the pending timer (waiters came or went). */
  refreshKeepAlive(): void {
    if (this.timer !== undefined && this.timerKeepsAlive !== this.host.hasWaiters()) {
      const at = this.timerAt;
      this.clearTimer();
      this.schedule(at);
    }
  }

  /**
   * Stops acquiring and renewing, retires every partition, waits until each has been quiet for a
   * slice, releases them all, and leaves no timer behind.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.clearTimer();
    const now = this.o.clock.now();
    for (const held of [...this.pacer.partitions]) this.retire(held, "close", now);
    if (this.acquireInFlight) await this.acquireInFlight;
    const quietAt = Math.max(now, ...this.retiring.map((r) => r.quietAt));
    if (quietAt > now) {
      await new Promise<void>((resolve) => this.o.clock.setTimeout(resolve, quietAt - now, true));
    }
    await Promise.all(this.retiring.filter((r) => !r.releasing).map((r) => this.release(r)));
    await Promise.allSettled([...this.inFlight]);
  }

  private tick(): void {
    this.timer = undefined;
    this.timerAt = Infinity;
    if (this.closed) return;
    const now = this.o.clock.now();
    this.expireOverdue(now);
    for (const r of this.retiring) if (!r.releasing && now >= r.quietAt) void this.release(r);
    if (!this.planReady) {
      if (!this.planInFlight && now >= this.planRetryAt) void this.ensurePlan();
    } else {
      this.renewDue(now);
      this.adjust(now);
    }
    this.scheduleNext(now);
  }

  private expireOverdue(now: number): void {
    for (const held of [...this.pacer.partitions]) {
      if (now >= held.validUntil) {
        this.counters.lost++;
        this.host.emit("lost", { partition: held.partition, reason: "expired" });
        // It may still be ours on the server (a renew reply lost): release it once quiet.
        this.retire(held, null, now);
        this.host.capacityChanged();
      }
    }
  }

  private renewDue(now: number): void {
    for (const held of this.pacer.partitions) {
      if (!held.renewInFlight && now >= this.renewAt(held)) void this.renew(held, now);
    }
  }

  /**
   * When `held` is next due for renewal: a renewal period after the last successful one, and not
   * sooner than the retry pause after the last attempt. The timer must use the same time as the
   * check, or a failed renewal would fire zero-delay ticks until the retry pause is over.
   */
  private renewAt(held: HeldPartition): number {
    return Math.max(held.renewedSentAt + this.o.renewEveryMs, held.lastRenewAttemptAt + this.renewRetryMs);
  }

  private adjust(now: number): void {
    const o = this.o;
    const active = this.pacer.partitions.length;
    const wantedUnits = this.host.wantedMicro(now) / UNIT_SCALE;
    // A waiter whose cost exceeds what the held partitions admit per slice blocks the queue until
    // enough partitions are held to split it over.
    const needed = Math.max(Math.ceil((wantedUnits * HEADROOM) / o.partitionCapacity), Math.ceil(this.host.headMicro() / o.sliceMicro));
    this.desired = Math.min(o.maxPartitions, Math.max(o.minPartitions, needed));
    if (active < this.desired && !this.acquireInFlight && now >= this.acquireRetryAt) {
      this.acquireInFlight = this.acquire(now).finally(() => {
        this.acquireInFlight = null;
        if (!this.closed) this.schedule(this.o.clock.now());
      });
    }
    if (active > this.desired) {
      this.surplusSince ??= now;
      if (now - this.surplusSince >= this.hysteresisMs) {
        // Give back the partition idle the longest: the pacer fills the oldest ones first.
        let idlest = this.pacer.partitions[0]!;
        for (const p of this.pacer.partitions) if (p.window.lastChargeAt < idlest.window.lastChargeAt) idlest = p;
        this.retire(idlest, "surplus", now);
        this.surplusSince = now;
        this.host.capacityChanged();
      }
    } else {
      this.surplusSince = null;
    }
  }

  private scheduleNext(now: number): void {
    let next = Infinity;
    if (!this.planReady) {
      if (!this.planInFlight) next = Math.max(now, this.planRetryAt);
    } else {
      for (const held of this.pacer.partitions) {
        next = Math.min(next, held.validUntil);
        if (!held.renewInFlight) next = Math.min(next, this.renewAt(held));
      }
      if (this.pacer.partitions.length < this.desired && !this.acquireInFlight) next = Math.min(next, this.acquireRetryAt);
      if (this.surplusSince !== null) next = Math.min(next, this.surplusSince + this.hysteresisMs);
      // Demand falls without any event: look again every interval while holding spare partitions.
      if (this.pacer.partitions.length > this.o.minPartitions) next = Math.min(next, now + this.o.plan.intervalMs);
    }
    for (const r of this.retiring) if (!r.releasing) next = Math.min(next, r.quietAt);
    if (next < Infinity) this.schedule(Math.max(next, now));
  }

  private schedule(at: number): void {
    if (this.closed) return;
    const keepAlive = this.host.hasWaiters();
    if (this.timer !== undefined && this.timerAt <= at && this.timerKeepsAlive === keepAlive) return;
    this.clearTimer();
    const now = this.o.clock.now();
    this.timerAt = at;
    this.timerKeepsAlive = keepAlive;
    this.timer = this.o.clock.setTimeout(() => this.tick(), Math.max(0, at - now), keepAlive);
  }

  private clearTimer(): void {
    if (this.timer !== undefined) this.o.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Infinity;
  }

  private backoff(failures: number): number {
    const ceiling = Math.min(this.maxBackoffMs, 50 * 2 ** Math.min(failures, 10));
    return ceiling * (0.5 + Math.random() * 0.5);
  }

  private async ensurePlan(): Promise<void> {
    this.planInFlight = true;
    const o = this.o;
    try {
      await this.call("ensurePlan", () =>
        o.backend.ensurePlan(o.resource, o.plan, { graceMs: o.leaseTtlMs, timeoutMs: o.backendTimeoutMs }),
      );
      this.planReady = true;
      this.planFailures = 0;
    } catch (error) {
      if (PlanMismatchError.is(error) || ConfigError.is(error)) {
        this.host.planFailed(error);
        return;
      }
      this.planRetryAt = o.clock.now() + this.backoff(++this.planFailures);
    } finally {
      this.planInFlight = false;
      if (!this.closed) this.schedule(o.clock.now());
    }
  }

  private candidates(): number[] {
    const taken = new Set<number>();
    for (const p of this.pacer.partitions) taken.add(p.partition);
    for (const r of this.retiring) taken.add(r.held.partition);
    const own = shuffle(this.o.ownPoolPartitions.filter((p) => !taken.has(p)));
    const shared = shuffle(this.o.sharedPartitions.filter((p) => !taken.has(p)));
    return own.concat(shared);
  }

  private async acquire(now: number): Promise<void> {
    const o = this.o;
    const candidates = this.candidates();
    if (candidates.length === 0) {
      // Every partition is held or still retiring here: look again after a backoff, not at once,
      // or the loop would reschedule itself with zero delay until a retiring one is released.
      this.acquireRetryAt = now + this.backoff(++this.acquireFailures);
      return;
    }
    const sentAt = now;
    let lease: Lease | null;
    try {
      lease = await this.call("tryAcquire", () =>
        o.backend.tryAcquire(o.resource, candidates, o.holderId, o.leaseTtlMs, { timeoutMs: o.backendTimeoutMs }),
      );
    } catch (error) {
      if (PlanMissingError.is(error)) this.planReady = false;
      if (ConfigError.is(error)) {
        this.host.planFailed(error);
        return;
      }
      this.acquireRetryAt = o.clock.now() + this.backoff(++this.acquireFailures);
      return;
    }
    const after = o.clock.now();
    if (!lease) {
      this.acquireRetryAt = after + this.backoff(++this.acquireFailures);
      return;
    }
    this.acquireFailures = 0;
    this.acquireRetryAt = -Infinity;
    const validUntil = sentAt + o.leaseTtlMs - o.safetyMarginMs;
    if (this.closed || validUntil <= after || !candidates.includes(lease.partition)) {
      // Nothing was admitted on it, so it can go back at once.
      void this.callRelease(lease);
      return;
    }
    const held = new HeldPartition(lease, sentAt, validUntil, o.sliceMicro, o.sliceMs, o.sliceMs / 256);
    this.pacer.add(held);
    this.counters.acquired++;
    this.host.emit("acquired", { partition: lease.partition, fencingToken: lease.fencingToken, validForMs: validUntil - after });
    this.host.capacityChanged();
  }

  private async renew(held: HeldPartition, now: number): Promise<void> {
    const o = this.o;
    held.renewInFlight = true;
    held.lastRenewAttemptAt = now;
    const sentAt = now;
    try {
      const ok = await this.call("renew", () => o.backend.renew(held.lease, o.leaseTtlMs, { timeoutMs: o.backendTimeoutMs }));
      if (!this.pacer.partitions.includes(held)) return; // retired meanwhile
      if (ok) {
        held.renewedSentAt = sentAt;
        held.validUntil = Math.max(held.validUntil, sentAt + o.leaseTtlMs - o.safetyMarginMs);
        this.counters.renewed++;
        this.host.emit("renewed", { partition: held.partition, validForMs: held.validUntil - o.clock.now() });
        // A later deadline can bring a waiter's admission time within this partition's life.
        this.host.capacityChanged();
      } else {
        // Not ours any more: stop at once, and do not release what someone else may hold.
        this.pacer.remove(held);
        this.counters.lost++;
        this.host.emit("lost", { partition: held.partition, reason: "renew-rejected" });
        this.host.capacityChanged();
      }
    } catch {
      // Already reported; the partition runs to its local deadline.
    } finally {
      held.renewInFlight = false;
    }
  }

  private retire(held: HeldPartition, reason: ReleaseReason | null, now: number): void {
    held.draining = true;
    this.pacer.remove(held);
    const quietAt = Math.max(now, held.window.lastChargeAt + this.quietMs);
    this.retiring.push({ held, reason, quietAt, releasing: false });
  }

  private async release(r: Retiring): Promise<void> {
    r.releasing = true;
    await this.callRelease(r.held.lease);
    const i = this.retiring.indexOf(r);
    if (i >= 0) this.retiring.splice(i, 1);
    if (r.reason) {
      this.counters.released++;
      this.host.emit("released", { partition: r.held.partition, reason: r.reason });
    }
  }

  private async callRelease(lease: Lease): Promise<void> {
    try {
      await this.call("release", () => this.o.backend.release(lease, { timeoutMs: this.o.backendTimeoutMs }));
    } catch {
      // Reported; the lease expires by its TTL.
    }
  }

  /** Runs a backend call, reporting its duration and any failure. */
  private async call<T>(operation: Operation, fn: () => Promise<T>): Promise<T> {
    const started = this.o.clock.now();
    const promise = fn();
    this.inFlight.add(promise);
    try {
      const result = await promise;
      this.host.emit("backend-call", { operation, durationMs: this.o.clock.now() - started, ok: true });
      return result;
    } catch (error) {
      const durationMs = this.o.clock.now() - started;
      this.host.emit("backend-call", { operation, durationMs, ok: false });
      if (!PlanMissingError.is(error) && !PlanMismatchError.is(error)) {
        this.counters.backendErrors++;
        this.host.emit("backend-error", { operation, error, durationMs });
      }
      throw error;
    } finally {
      this.inFlight.delete(promise);
    }
  }
}

function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}
