import type { EventEmitter } from "node:events";
import { ConfigError } from "../errors/config-error.js";
import { PlanMismatchError } from "../errors/plan-mismatch-error.js";
import { PlanMissingError } from "../errors/plan-missing-error.js";
import type { TimerHandle } from "../contract/clock.js";
import type { HeartbeatResult, HolderRecord, Lease, PublishedHolder } from "../contract/lease-backend.js";
import { planMismatch, samePlan, type StoredPlan } from "../contract/plan.js";
import { backoffMs, earlyHeartbeatSpacingMs, lostHistoryWindowMs, type PlanHistory } from "../contract/timing.js";
import type { BackendOperation, PartitionedRateLimiterEvents, ReleaseReason } from "./events.js";
import { fairShares, SHARED, type FairShare } from "./fair-share.js";
import { HeldPartition } from "./held-partition.js";
import type { ResolvedOptions } from "./options.js";
import type { Pacer } from "./pacer.js";
import { resolvePlanConfig, type PlanConfig } from "./plan-config.js";

/** What the lease manager reads of the demand on the limiter around it. */
export interface DemandReading {
  /** Units wanted over the last interval: admitted, refused and queued. */
  readonly wantedUnits: number;
  /** Units admitted over the last interval. */
  readonly admittedUnits: number;
  /** The share of recent time callers were waiting for capacity, 0 to 1. */
  readonly busyFraction: number;
  /** Counting units of the first waiter in line, 0 if none: it needs at least that much per slice. */
  readonly headCount: number;
}

/** What the lease manager needs from the limiter around it. */
export interface LeaseManagerHost {
  demand(now: number): DemandReading;
  /** Whether callers are waiting (timers then keep the process alive). */
  hasWaiters(): boolean;
  /** Held capacity changed: try the queue again. */
  capacityChanged(): void;
  /** A (new) stored plan is in force; `previous` is null the first time. */
  planAdopted(config: PlanConfig, previous: PlanConfig | null): void;
  /** The limiter cannot run (plan mismatch, settings that do not fit): close it with `error`. */
  planFailed(error: unknown): void;
  /** Where lease events go (the limiter itself). */
  readonly events: EventEmitter<PartitionedRateLimiterEvents>;
}

/** Counters of lease activity, for stats and metrics. */
export interface LeaseCounters {
  acquired: number;
  renewed: number;
  released: number;
  lost: number;
  backendErrors: number;
  /** Acquire attempts that found every candidate taken (contention). */
  acquireMisses: number;
  heartbeats: number;
}

/** How the backend looks from here, for stats, status and error messages. */
export interface BackendHealth {
  /** `"ok"`; `"failing"` (calls fail); `"grace"` (a grace period runs); `"no-plan"` (following, none stored yet); `"starting"`. */
  readonly state: "starting" | "ok" | "failing" | "grace" | "no-plan";
  /** Failed calls in a row. */
  readonly consecutiveFailures: number;
  /** The last failure, while failing. */
  readonly lastError: unknown;
  /** ms left of a grace period known to run, 0 if none. */
  readonly graceRemainingMs: number;
}

/** This limiter's view of the fair share, for stats. */
export interface ShareView {
  /** Partitions this limiter wants (as published). */
  readonly wants: number;
  /** Its fair share of partitions now. */
  readonly share: number;
  /** How much of its reserve is honoured. */
  readonly reserved: number;
  /** Live holders seen in the last heartbeat. */
  readonly holders: number;
}

interface Retiring {
  held: HeldPartition;
  reason: ReleaseReason | null;
  quietAt: number;
  releasing: boolean;
}

/** Extra demand kept as headroom when sizing how many partitions to want. */
const HEADROOM = 1.25;
/** Callers waiting this share of the recent time want more than they hold. */
const SATURATED_FRACTION = 0.5;
/** Failed calls in a row after which a starving limiter warns once (process.emitWarning). */
const WARN_AFTER_FAILURES = 3;
/** Backend and resource pairs warned about and not yet recovered: many limiters of one process warn once. */
const warnedOutages = new Set<string>();

/**
 * LeaseManager owns all lease activity of one limiter: it stores, checks or adopts the plan, sends
 * one heartbeat per renewal period (renewing every held lease and publishing this holder's demand
 * record), computes the fair share from everyone's records, acquires partitions up to its share
 * (own pool first, free ones first, random order), and gives partitions back only after they have
 * been quiet for a full slice, so the next holder, who starts with an empty history, cannot stack
 * its first slice onto this one's last. Timing relations come from contract/timing.ts.
 */
export class LeaseManager {
  /** Lease activity so far. */
  readonly counters: LeaseCounters = { acquired: 0, renewed: 0, released: 0, lost: 0, backendErrors: 0, acquireMisses: 0, heartbeats: 0 };
  private config: PlanConfig | null;
  private phase: "plan" | "running" | "stopping" | "closed" = "plan";
  /** The plan was verified in the backend at least once (a later loss is re-created with history "lost"). */
  private planVerified = false;
  private planInFlight = false;
  private planRetryAt = -Infinity;
  private planFailures = 0;
  private timer: TimerHandle | undefined;
  private timerAt = Infinity;
  private timerKeepsAlive = false;
  private heartbeatInFlight = false;
  private nextHeartbeatAt = -Infinity;
  private lastHeartbeatSentAt = -Infinity;
  /** When the last heartbeat that found exactly our plan stored, with no grace running, was sent. */
  private cleanBeatSentAt = -Infinity;
  private acquireInFlight: Promise<void> | null = null;
  private acquireRetryAt = -Infinity;
  private acquireFailures = 0;
  private graceUntil = -Infinity;
  private graceReported = -Infinity;
  private surplusSince: number | null = null;
  private lastWakeAt = -Infinity;
  private view: { holders: readonly PublishedHolder[]; at: number } = { holders: [], at: -Infinity };
  private published: { wants: number; at: number } = { wants: 0, at: -Infinity };
  private wantsNow = { value: 0, highAt: -Infinity };
  private share: FairShare | null = null;
  private mismatch: unknown = null;
  private failures = { consecutive: 0, last: null as unknown, warned: false };
  private readonly retiring: Retiring[] = [];
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(private readonly o: ResolvedOptions, private readonly pacer: Pacer, private readonly host: LeaseManagerHost) {
    this.config = o.initialConfig;
  }

  /** Starts the loop: stores, checks or reads the plan, then heartbeats and acquires. */
  start(): void {
    this.schedule(this.o.clock.now());
  }

  /** The configuration in force: the stored plan's once read, the own plan's before; null while following with no plan seen yet. */
  get current(): PlanConfig | null {
    return this.config;
  }

  /** Partitions given up but not yet released (they are excluded from new acquisitions). */
  get retiringCount(): number {
    return this.retiring.length;
  }

  /** The backend as seen from here. */
  health(now: number): BackendHealth {
    const graceRemainingMs = Math.max(0, this.graceUntil - now);
    const state = this.failures.consecutive > 0
      ? "failing"
      : graceRemainingMs > 0
        ? "grace"
        : this.phase === "plan"
          ? this.planFailures > 0 || !this.o.plan ? "no-plan" : "starting"
          : "ok";
    return { state, consecutiveFailures: this.failures.consecutive, lastError: this.failures.consecutive > 0 ? this.failures.last : null, graceRemainingMs };
  }

  /** The fair-share view, for stats. */
  shareView(): ShareView {
    return {
      wants: this.published.wants,
      share: this.share?.total ?? 0,
      reserved: this.share?.reserved ?? 0,
      holders: this.view.holders.length,
    };
  }

  /**
   * Demand rose (a waiter queued, a tryAcquire was refused): run the loop soon, at most once per
   * half slice so a refused hot loop does not spin timers.
   */
  wake(now: number): void {
    if (this.phase === "closed" || this.acquireInFlight || now < this.acquireRetryAt || this.timerAt <= now) return;
    if (now - this.lastWakeAt < (this.config?.sliceMs ?? 50) / 2) return;
    if (this.config && this.pacer.partitions.length >= this.config.maxPartitions) return;
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
   * slice, releases them all, publishes that it wants nothing, and leaves no timer behind.
   */
  async close(): Promise<void> {
    if (this.phase === "closed") return;
    const wasRunning = this.phase === "running" || this.phase === "stopping";
    this.phase = "closed";
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
    // Others reclaim this holder's share at once instead of after its record expires.
    const config = this.config;
    if (wasRunning && config && this.planVerified) {
      await this.call("heartbeat", () =>
        this.o.backend.heartbeat(
          { resource: this.o.resource, plan: config.stored, holder: this.record([], 0, 0, 0), leases: [] },
          { timeoutMs: config.backendTimeoutMs },
        ),
      ).catch(() => undefined);
    }
  }

  private tick(): void {
    this.timer = undefined;
    this.timerAt = Infinity;
    if (this.phase === "closed") return;
    const now = this.o.clock.now();
    this.expireOverdue(now);
    for (const r of this.retiring) if (!r.releasing && now >= r.quietAt) void this.release(r);
    if (this.phase === "plan") {
      if (!this.planInFlight && now >= this.planRetryAt) void this.ensurePlan();
    } else if (this.phase === "stopping") {
      if (this.pacer.partitions.length === 0) this.host.planFailed(this.mismatch);
    } else {
      if (!this.heartbeatInFlight && now >= this.nextHeartbeatAt && this.wantsHeartbeat(now)) void this.heartbeat(now);
      this.adjust(now);
    }
    this.scheduleNext(now);
  }

  private expireOverdue(now: number): void {
    for (const held of [...this.pacer.partitions]) {
      if (now < held.validUntil) continue;
      if (!held.lapsed) {
        held.lapsed = true;
        this.counters.lost++;
        this.host.events.emit("lost", { partition: held.partition, reason: "expired" });
        this.host.capacityChanged();
      }
      // While running it stays held, unusable: it may still be ours on the backend (renewals
      // failed while the backend was unreachable; etcd extends every lease on a leader change), and
      // a backend that grants nothing for a while (a grace) would not give it back. The next
      // heartbeat renews it, which the backend does only while it is still this grant (assumption 3
      // of docs/guarantee.md: an expired lease is never renewed), or says it is gone. Otherwise, or
      // when it cannot be renewed (the plan changed), it is released once quiet.
      if (this.phase !== "running") this.retire(held, null, now);
    }
  }

  /** Not a getter on `phase`: after an await, the compiler would narrow it from before. */
  private isClosed(): boolean {
    return this.phase === "closed";
  }

  // ---- the plan ----------------------------------------------------------------------------

  private async ensurePlan(): Promise<void> {
    this.planInFlight = true;
    const o = this.o;
    const timeoutMs = this.config?.backendTimeoutMs ?? 5_000;
    // The plan to store where none is: the one last run under (a follower stores the followed
    // plan again after a loss), else the own one. A follower without either only reads.
    const plan = this.planVerified ? this.config!.plan : o.plan;
    try {
      const stored = plan
        ? await this.call("ensurePlan", () => o.backend.ensurePlan(o.resource, plan, { history: this.history(), timeoutMs }))
        : await this.call("readPlan", () => o.backend.readPlan(o.resource, { timeoutMs }));
      if (!stored) {
        // Following, with no plan of its own: wait for one to be stored.
        this.planRetryAt = o.clock.now() + Math.min(1_000, 100 * 2 ** Math.min(this.planFailures++, 4));
        return;
      }
      this.adopt(stored);
    } catch (error) {
      if (PlanMismatchError.is(error) || ConfigError.is(error)) return this.host.planFailed(error);
      this.planRetryAt = o.clock.now() + this.backoff(++this.planFailures);
    } finally {
      this.planInFlight = false;
      if (!this.isClosed()) this.schedule(o.clock.now());
    }
  }

  /**
   * What this limiter can vouch for about the leases a backend that lost the plan may have
   * forgotten (rule G3): "lost" (they were all of the plan it ran under) only within
   * `lostHistoryWindowMs` of a heartbeat that found exactly that plan with no grace running;
   * otherwise "unknown", and the backend waits out the longest TTL.
   */
  private history(): PlanHistory {
    const config = this.config;
    if (!this.planVerified || !config) return "unknown";
    const elapsed = this.o.clock.now() - this.cleanBeatSentAt;
    return elapsed < lostHistoryWindowMs(config.plan, config.backendTimeoutMs) ? "lost" : "unknown";
  }

  /** Runs under `stored`, or fails when it differs from the own plan and this limiter does not follow. */
  private adopt(stored: StoredPlan): void {
    const o = this.o;
    if (o.plan && !samePlan(stored.plan, o.plan) && !o.followPlan) throw planMismatch(o.resource, stored, o.plan);
    const previous = this.planVerified ? this.config : null;
    if (previous && previous.epoch === stored.epoch && samePlan(previous.plan, stored.plan)) {
      this.phase = "running";
      this.planFailures = 0;
      return;
    }
    const next = resolvePlanConfig(stored.plan, stored.epoch, o.settings, o.backend.leaseTtlRule);
    if (previous && previous.epoch !== next.epoch) {
      // Old-epoch leases are not renewed any more; give them back after their last slice.
      const now = o.clock.now();
      for (const held of [...this.pacer.partitions]) this.retire(held, "plan-changed", now);
      this.host.events.emit("plan-changed", { previousEpoch: previous.epoch, epoch: next.epoch });
    }
    this.config = next;
    this.planVerified = true;
    this.planFailures = 0;
    this.phase = "running";
    this.nextHeartbeatAt = -Infinity;
    this.view = { holders: [], at: -Infinity };
    this.host.planAdopted(next, previous);
  }

  /** The stored plan is not ours any more: follow it, or stop at the held leases' deadlines; `gone`: none is stored. */
  private async planChanged(gone: boolean): Promise<void> {
    if (this.phase !== "running") return;
    if (gone) {
      // The plan is gone (state lost, or deleted): store it again (or, following, wait for one).
      this.phase = "plan";
      this.planRetryAt = -Infinity;
      return;
    }
    const o = this.o;
    this.phase = "plan";
    this.planInFlight = true;
    try {
      const stored = await this.call("readPlan", () => o.backend.readPlan(o.resource, { timeoutMs: this.config?.backendTimeoutMs ?? 5_000 }));
      if (!stored) {
        this.planRetryAt = -Infinity;
        return;
      }
      if (o.followPlan || (o.plan && samePlan(stored.plan, o.plan))) {
        this.adopt(stored);
        return;
      }
      // A fixed configuration that the new plan no longer matches: keep admitting on what is
      // held until its local deadlines (never renewed again), then fail with the mismatch.
      this.mismatch = planMismatch(o.resource, stored, o.plan!);
      this.phase = "stopping";
    } catch (error) {
      if (PlanMismatchError.is(error) || ConfigError.is(error)) {
        this.mismatch = error;
        this.phase = "stopping";
      } else {
        this.phase = "running";
        this.nextHeartbeatAt = o.clock.now() + (this.config?.renewRetryMs ?? 100);
      }
    } finally {
      this.planInFlight = false;
      if (!this.isClosed()) this.schedule(o.clock.now());
    }
  }

  // ---- heartbeat: renew everything, publish demand, read everyone's -------------------------

  /** A limiter that holds nothing and wants nothing stays silent (its record just expires). */
  private wantsHeartbeat(now: number): boolean {
    return this.pacer.partitions.length > 0 || this.computeWants(now) > 0 || this.published.wants > 0;
  }

  private async heartbeat(now: number): Promise<void> {
    const config = this.config!;
    const o = this.o;
    this.heartbeatInFlight = true;
    const sentAt = now;
    this.lastHeartbeatSentAt = sentAt;
    const held = [...this.pacer.partitions];
    const askedProof = held.some((h) => h.lapsed);
    const wants = this.computeWants(now);
    const reading = this.host.demand(now);
    const record = this.record(held.map((h) => h.partition), wants, reading.wantedUnits, reading.admittedUnits);
    let result: HeartbeatResult;
    try {
      result = await this.call("heartbeat", () =>
        o.backend.heartbeat(
          { resource: o.resource, plan: config.stored, holder: record, leases: held.map((h) => h.lease), ...(askedProof ? { proveContinuity: true } : {}) },
          { timeoutMs: config.backendTimeoutMs },
        ),
      );
    } catch (error) {
      // Held partitions run to their local deadlines; try again soon.
      if (ConfigError.is(error)) this.host.planFailed(error);
      this.nextHeartbeatAt = o.clock.now() + config.renewRetryMs;
      return;
    } finally {
      this.heartbeatInFlight = false;
      if (!this.isClosed()) this.schedule(o.clock.now());
    }
    if (this.isClosed() || this.config !== config) return;
    this.counters.heartbeats++;
    this.published = { wants, at: sentAt };
    this.nextHeartbeatAt = sentAt + config.renewEveryMs;
    const after = o.clock.now();
    const sameEpoch = result.samePlan;
    // A heartbeat that found exactly our plan and no grace: until a TTL later, every lease the
    // backend may forget is of this plan (docs/guarantee.md, G3).
    if (sameEpoch && result.graceMs === 0) this.cleanBeatSentAt = sentAt;
    held.forEach((h, i) => {
      if (!this.pacer.partitions.includes(h)) return; // retired meanwhile
      if (result.renewed[i] === true && h.lapsed && this.o.backend.revivesExpiredLeases !== false && !this.aliveAtRevival(h, result, after)) {
        // A backend that revives leases (etcd, on a restore) may have brought this grant back
        // after it expired and went to another holder, who admits on it until its own deadline:
        // a renewal proves nothing then, and never will. Found by test/unit/lapsed-partition.test.ts
        // (171 windows over when it was used again). Released once quiet (docs/guarantee.md, G2);
        // a renewal sent before the lapse did not ask for the proof: the next one does.
        if (askedProof) this.retire(h, null, after);
      } else if (result.renewed[i] === true) {
        h.lapsed = false;
        h.renewedSentAt = sentAt;
        // From the SEND time: the backend's expiry runs from when it received the call, later.
        h.validUntil = Math.max(h.validUntil, sentAt + config.plan.leaseTtlMs - config.safetyMarginMs);
        this.counters.renewed++;
        this.host.events.emit("renewed", { partition: h.partition, validForMs: h.validUntil - after });
      } else if (sameEpoch || result.epoch === null) {
        // Not ours any more: stop at once, and do not release what someone else may hold.
        this.pacer.remove(h);
        // A lapsed one was already reported lost at its deadline.
        if (!h.lapsed) {
          this.counters.lost++;
          this.host.events.emit("lost", { partition: h.partition, reason: "renew-rejected" });
        }
      }
      // Another epoch: the lease is not renewed but stays ours until its deadline; past it, it can
      // never be renewed again.
      else if (h.lapsed) this.retire(h, null, after);
    });
    this.noteGrace(result.graceMs, after);
    this.view = { holders: result.holders, at: after };
    this.host.capacityChanged();
    if (!sameEpoch) void this.planChanged(result.epoch === null);
  }

  /**
   * Whether a lapsed lease the backend just renewed was alive when the backend last revived
   * leases: its earliest possible expiry (its last proven renewal's send time plus the TTL, on our
   * clock) comes after the latest possible time of that revival. Then no revival can have brought
   * it back after it expired, so no one else can have been granted it since (docs/guarantee.md).
   */
  private aliveAtRevival(h: HeldPartition, result: HeartbeatResult, after: number): boolean {
    if (result.revivedAgoMs === undefined) return false;
    const { plan } = this.config!;
    const revivedBy = after - result.revivedAgoMs / (1 + plan.driftFactor);
    return revivedBy < h.renewedSentAt + plan.leaseTtlMs / (1 + plan.driftFactor);
  }

  private record(held: readonly number[], wants: number, demand: number, rate: number): HolderRecord {
    const config = this.config!;
    return { holderId: this.o.holderId, pool: config.pool, wants, weight: this.o.weight, reserve: config.reserve, held, demand, rate };
  }

  /**
   * Whole partitions wanted: all it may hold when callers wait for capacity most of the time,
   * otherwise recent demand with headroom. A drop is published only after it lasted a hysteresis
   * period, so a moment of low demand does not hand partitions to others and back.
   */
  private computeWants(now: number): number {
    const config = this.config;
    if (!config) return 0;
    const d = this.host.demand(now);
    // Callers that wait for capacity most of the time want more than they hold, however few
    // items they queue at once (a plain acquire loop, a pace() pipeline).
    // The first waiter needs enough partitions for its cost in one slice's bursts, at the pace in
    // force (a rate factor below 1 shrinks every partition's burst).
    const burst = Math.max(1, Math.floor(config.sliceCount * this.pacer.factor));
    let wants = d.busyFraction >= SATURATED_FRACTION
      ? config.maxPartitions
      : Math.max(Math.ceil((d.wantedUnits * HEADROOM) / config.partitionCapacity), Math.ceil(d.headCount / burst));
    wants = Math.min(config.maxPartitions, Math.max(config.minPartitions, wants));
    const w = this.wantsNow;
    if (wants >= w.value) {
      w.value = wants;
      w.highAt = now;
    } else if (now - w.highAt >= config.hysteresisMs) {
      w.value = wants;
      w.highAt = now;
    }
    return w.value;
  }

  // ---- sizing: acquire up to the share, give back above it ----------------------------------

  private adjust(now: number): void {
    const config = this.config!;
    const wants = this.computeWants(now);
    const mine = this.pacer.partitions;
    const heldIn = countByCategory(config, mine.map((h) => h.partition));
    const others = this.liveOthers(now);
    const shares = fairShares(config.plan, [
      ...others,
      { holderId: this.o.holderId, pool: config.pool, wants, weight: this.o.weight, reserve: config.reserve, held: mine.map((h) => h.partition), since: this.ownSince() },
    ]);
    const share = shares.get(this.o.holderId)!;
    this.share = share;
    const takenByOthers = new Set<number>();
    for (const h of others) for (const p of h.held) takenByOthers.add(p);
    const deficit: string[] = [];
    let surplus = false;
    for (const [category, allotted] of categoriesOf(config, share)) {
      const held = heldIn.get(category) ?? 0;
      if (held < allotted) deficit.push(category);
      else if (held > allotted) {
        if (this.contended(config, category, others, shares, takenByOthers, heldIn)) {
          // Someone is below its share and nothing in this category is free: give back now.
          const excess = held - allotted;
          const idlest = mine.filter((h) => (config.categories[h.partition] ?? SHARED) === category).sort((a, b) => a.pace.lastChargeAt - b.pace.lastChargeAt);
          for (const h of idlest.slice(0, excess)) this.retire(h, "rebalance", now);
          this.host.capacityChanged();
        } else surplus = true;
      }
    }
    if (surplus) {
      this.surplusSince ??= now;
      if (now - this.surplusSince >= config.hysteresisMs) {
        // Give back the partition idle the longest among the categories held above the share.
        const over = mine.filter((h) => {
          const category = config.categories[h.partition] ?? SHARED;
          return (heldIn.get(category) ?? 0) > (share.byCategory.get(category) ?? 0);
        });
        const idlest = over.sort((a, b) => a.pace.lastChargeAt - b.pace.lastChargeAt)[0];
        if (idlest) this.retire(idlest, "surplus", now);
        this.surplusSince = now;
        this.host.capacityChanged();
      }
    } else {
      this.surplusSince = null;
    }
    if (deficit.length > 0 && now >= this.graceUntil && !this.acquireInFlight && now >= this.acquireRetryAt) {
      const candidates = this.candidates(config, deficit, takenByOthers);
      this.acquireInFlight = this.acquire(now, candidates).finally(() => {
        this.acquireInFlight = null;
        if (!this.isClosed()) this.schedule(this.o.clock.now());
      });
    }
    // Others learn of a rise only from a record: publish it early when they must give back.
    if (deficit.length > 0 && wants > this.published.wants && !this.heartbeatInFlight && now - this.lastHeartbeatSentAt >= earlyHeartbeatSpacingMs(config.plan)) {
      this.nextHeartbeatAt = Math.min(this.nextHeartbeatAt, now);
    }
  }

  /**
   * Whether another holder is below its share in `category` with too few free partitions there to
   * make it up: then this holder's excess is someone's share and goes back at once.
   */
  private contended(
    config: PlanConfig,
    category: string,
    others: readonly PublishedHolder[],
    shares: Map<string, FairShare>,
    takenByOthers: ReadonlySet<number>,
    mineIn: ReadonlyMap<string, number>,
  ): boolean {
    let missing = 0;
    for (const h of others) {
      const allotted = shares.get(h.holderId)?.byCategory.get(category) ?? 0;
      const held = h.held.filter((p) => (config.categories[p] ?? SHARED) === category).length;
      if (allotted > held) missing += allotted - held;
    }
    if (missing === 0) return false;
    let free = 0;
    config.categories.forEach((c, p) => {
      if (c === category && !takenByOthers.has(p)) free++;
    });
    free -= mineIn.get(category) ?? 0;
    return missing > free;
  }

  /** Partitions to try: free ones (by the records) of the categories below share first, then the rest of them, each group shuffled. */
  private candidates(config: PlanConfig, categories: readonly string[], takenByOthers: ReadonlySet<number>): number[] {
    const mine = new Set<number>();
    for (const p of this.pacer.partitions) mine.add(p.partition);
    for (const r of this.retiring) mine.add(r.held.partition);
    const order = [...categories].sort((a, b) => rank(config, a) - rank(config, b));
    const free: number[] = [];
    const busy: number[] = [];
    for (const category of order) {
      const f: number[] = [];
      const b: number[] = [];
      config.categories.forEach((c, p) => {
        if (c !== category || mine.has(p)) return;
        (takenByOthers.has(p) ? b : f).push(p);
      });
      free.push(...this.shuffle(f));
      busy.push(...this.shuffle(b));
    }
    return free.concat(busy);
  }

  private async acquire(now: number, candidates: number[]): Promise<void> {
    const config = this.config!;
    const o = this.o;
    if (candidates.length === 0) {
      this.acquireRetryAt = now + this.backoff(++this.acquireFailures);
      return;
    }
    const sentAt = now;
    try {
      const result = await this.call("tryAcquire", () =>
        o.backend.tryAcquire(
          { resource: o.resource, plan: config.stored, candidates, holderId: o.holderId },
          { timeoutMs: config.backendTimeoutMs },
        ),
      );
      const after = o.clock.now();
      switch (result.kind) {
        case "granted":
          this.acquireFailures = 0;
          this.acquireRetryAt = -Infinity;
          this.granted(result.lease, sentAt, after, config, candidates);
          return;
        case "taken":
          this.counters.acquireMisses++;
          this.acquireRetryAt = after + this.backoff(++this.acquireFailures);
          return;
        case "grace":
          this.noteGrace(result.remainingMs, after);
          // Never at once: the backend's clock and ours round differently near the grace's end.
          this.acquireRetryAt = Math.max(this.graceUntil, after + 1);
          return;
        case "plan-changed":
          void this.planChanged(false);
          return;
      }
    } catch (error) {
      if (PlanMissingError.is(error)) {
        if (this.phase === "running") void this.planChanged(true);
        return;
      }
      if (ConfigError.is(error)) return this.host.planFailed(error);
      this.acquireRetryAt = o.clock.now() + this.backoff(++this.acquireFailures);
    }
  }

  private granted(lease: Lease, sentAt: number, after: number, config: PlanConfig, candidates: readonly number[]): void {
    const validUntil = sentAt + config.plan.leaseTtlMs - config.safetyMarginMs;
    if (this.phase !== "running" || this.config !== config || validUntil <= after || !candidates.includes(lease.partition)) {
      // Nothing was admitted on it, so it can go back at once.
      void this.callRelease(lease, config);
      return;
    }
    const held = new HeldPartition(lease, sentAt, validUntil, this.pacer.newPace(config.windowMs, config.sliceMs / 256));
    this.pacer.add(held);
    this.counters.acquired++;
    this.host.events.emit("acquired", { partition: lease.partition, fencingToken: lease.fencingToken, validForMs: validUntil - after });
    this.host.capacityChanged();
  }

  private noteGrace(remainingMs: number, now: number): void {
    if (remainingMs <= 0) return;
    this.graceUntil = Math.max(this.graceUntil, now + remainingMs);
    // Once per grace period: a grace that was already reported and runs on is not news.
    if (this.graceReported < now) {
      this.graceReported = this.graceUntil;
      this.host.events.emit("grace", { remainingMs: this.graceUntil - now });
    }
  }

  // ---- giving back --------------------------------------------------------------------------

  private retire(held: HeldPartition, reason: ReleaseReason | null, now: number): void {
    held.draining = true;
    this.pacer.remove(held);
    const quietAt = Math.max(now, held.pace.lastChargeAt + (this.config?.quietMs ?? 0));
    this.retiring.push({ held, reason, quietAt, releasing: false });
  }

  private async release(r: Retiring): Promise<void> {
    r.releasing = true;
    await this.callRelease(r.held.lease, this.config);
    const i = this.retiring.indexOf(r);
    if (i >= 0) this.retiring.splice(i, 1);
    if (r.reason) {
      this.counters.released++;
      this.host.events.emit("released", { partition: r.held.partition, reason: r.reason });
    }
  }

  private async callRelease(lease: Lease, config: PlanConfig | null): Promise<void> {
    try {
      await this.call("release", () => this.o.backend.release(lease, { timeoutMs: config?.backendTimeoutMs ?? 5_000 }));
    } catch {
      // Reported; the lease expires by its TTL.
    }
  }

  // ---- records -------------------------------------------------------------------------------

  /** Other holders' records from the last heartbeat, minus those that have expired since. */
  private liveOthers(now: number): PublishedHolder[] {
    const age = now - this.view.at;
    return this.view.holders.filter((h) => h.holderId !== this.o.holderId && (h.expiresInMs === null || h.expiresInMs > age));
  }

  /** When this holder's record was first published; before that it counts as the latest. */
  private ownSince(): number {
    return this.view.holders.find((h) => h.holderId === this.o.holderId)?.since ?? Infinity;
  }

  // ---- timers --------------------------------------------------------------------------------

  private scheduleNext(now: number): void {
    let next = Infinity;
    const config = this.config;
    if (this.phase === "plan") {
      if (!this.planInFlight) next = Math.max(now, this.planRetryAt);
    } else if (config) {
      for (const held of this.pacer.partitions) if (!held.lapsed) next = Math.min(next, held.validUntil);
      if (this.phase === "running") {
        if (!this.heartbeatInFlight && this.wantsHeartbeat(now)) next = Math.min(next, this.nextHeartbeatAt);
        if (!this.acquireInFlight && this.share && this.pacer.partitions.length < this.share.total) {
          next = Math.min(next, Math.max(this.acquireRetryAt, this.graceUntil));
        }
        if (this.surplusSince !== null) next = Math.min(next, this.surplusSince + config.hysteresisMs);
        // A crashed holder's record expires with its leases: recompute the share right then, so its
        // partitions are taken over at once rather than at the next wake-up.
        for (const h of this.liveOthers(now)) if (h.expiresInMs !== null) next = Math.min(next, this.view.at + h.expiresInMs + 1);
        // Demand falls without any event: look again every interval while holding spare partitions.
        if (this.pacer.partitions.length > config.minPartitions) next = Math.min(next, now + config.plan.intervalMs);
      }
    }
    for (const r of this.retiring) if (!r.releasing) next = Math.min(next, r.quietAt);
    if (next < Infinity) this.schedule(Math.max(next, now));
  }

  private schedule(at: number): void {
    if (this.phase === "closed") return;
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
    return this.config ? backoffMs(this.config.plan, failures, this.o.random) : Math.min(1_000, 50 * 2 ** Math.min(failures, 5));
  }

  private shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = Math.floor(this.o.random() * (i + 1));
      [items[i], items[j]] = [items[j]!, items[i]!];
    }
    return items;
  }

  /** Runs a backend call, reporting its duration and any failure, and tracking the backend's health. */
  private async call<T>(operation: BackendOperation, fn: () => Promise<T>): Promise<T> {
    const started = this.o.clock.now();
    const promise = fn();
    this.inFlight.add(promise);
    try {
      const result = await promise;
      this.host.events.emit("backend-call", { operation, durationMs: this.o.clock.now() - started, ok: true });
      if (this.failures.consecutive > 0) {
        this.failures.consecutive = 0;
        if (this.failures.warned) warnedOutages.delete(this.outageKey());
        this.failures.warned = false;
        this.host.events.emit("backend-recovered", { operation });
      }
      return result;
    } catch (error) {
      const durationMs = this.o.clock.now() - started;
      this.host.events.emit("backend-call", { operation, durationMs, ok: false });
      if (!PlanMissingError.is(error) && !PlanMismatchError.is(error) && !ConfigError.is(error)) {
        this.counters.backendErrors++;
        this.failures.consecutive++;
        this.failures.last = error;
        this.host.events.emit("backend-error", { operation, error, durationMs });
        this.warnIfStarving();
      }
      throw error;
    } finally {
      this.inFlight.delete(promise);
    }
  }

  private outageKey(): string {
    return `${this.o.backend.name}\n${this.o.resource}`;
  }

  /**
   * A backend that keeps failing while callers wait and nothing is held would otherwise be
   * silent unless someone listens to events: say it once per outage on the process's warning
   * channel (printed to stderr by default).
   */
  private warnIfStarving(): void {
    if (this.failures.warned || this.failures.consecutive < WARN_AFTER_FAILURES) return;
    if (this.pacer.partitions.length > 0 || !this.host.hasWaiters()) return;
    this.failures.warned = true;
    if (warnedOutages.has(this.outageKey())) return;
    warnedOutages.add(this.outageKey());
    const error = this.failures.last;
    process.emitWarning(
      `partitioned-rate-limiter: resource "${this.o.resource}" has no capacity: the ${this.o.backend.name} backend failed ${this.failures.consecutive} times in a row (last: ${error instanceof Error ? error.message : String(error)}); callers wait until it answers`,
      { code: "PRL_BACKEND_UNAVAILABLE" },
    );
  }
}

/** The categories a share allots (with zero for categories held but not allotted). */
function categoriesOf(config: PlanConfig, share: FairShare): Map<string, number> {
  const result = new Map<string, number>();
  for (const c of new Set(config.categories)) result.set(c, share.byCategory.get(c) ?? 0);
  return result;
}

function countByCategory(config: PlanConfig, partitions: readonly number[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const p of partitions) {
    const c = config.categories[p] ?? SHARED;
    counts.set(c, (counts.get(c) ?? 0) + 1);
  }
  return counts;
}

/** Own pool first, then shared, then other pools' (lent) partitions. */
function rank(config: PlanConfig, category: string): number {
  if (config.pool !== null && category === config.pool) return 0;
  return category === SHARED ? 1 : 2;
}
