import { randomUUID } from "node:crypto";
import { PlanMismatchError } from "../errors/plan-mismatch-error.js";
import { PlanMissingError } from "../errors/plan-missing-error.js";
import { BackendError } from "../errors/backend-error.js";
import { systemClock, type Clock } from "../contract/clock.js";
import { canonicalPlan, parsePlan, partitionPools, type Plan } from "../contract/plan.js";
import { withDeadline } from "./call-deadline.js";
import type { CallOptions, EnsurePlanOptions, Lease, LeaseBackend, PartitionState } from "../contract/lease-backend.js";

interface Grant {
  holderId: string;
  token: string;
  fencingToken: number;
  expiresAt: number;
}

interface ResourceRecord {
  plan: string;
  graceUntil: number;
  fencing: number;
  grants: Map<number, Grant>;
}

/** Options of {@link MemoryLeaseBackend}. */
export interface MemoryLeaseBackendOptions {
  /** The "server" clock leases expire on (default {@link systemClock}); share it with the limiters in tests. */
  clock?: Clock;
}

type Operation = "ensurePlan" | "readPlan" | "tryAcquire" | "renew" | "release" | "inspect";

/**
 * MemoryLeaseBackend keeps leases in this process, with the same semantics as the real backends:
 * exclusive, expiring on its clock, token-checked, a plan per resource with a grace period on
 * creation. Limiters in one process can share one instance; with a VirtualClock it drives
 * deterministic simulations. It also offers fault injection for tests: {@link failNext},
 * {@link stall}, {@link setLatency}, {@link loseState}.
 */
export class MemoryLeaseBackend implements LeaseBackend {
  /** `"memory"`. */
  readonly name = "memory";
  private readonly clock: Clock;
  private readonly resources = new Map<string, ResourceRecord>();
  private readonly failures = new Map<Operation, unknown[]>();
  private stalled: { promise: Promise<void>; resume: () => void } | null = null;
  private requestLatencyMs = 0;
  private replyLatencyMs = 0;
  private dropReplies = 0;
  /** How many calls each operation received (tests assert exact call counts). */
  readonly calls: Record<Operation, number> = {
    ensurePlan: 0,
    readPlan: 0,
    tryAcquire: 0,
    renew: 0,
    release: 0,
    inspect: 0,
  };

  /** Creates an empty backend on `options.clock`. */
  constructor(options: MemoryLeaseBackendOptions = {}) {
    this.clock = options.clock ?? systemClock;
  }

  /**
   * Makes the next `count` calls of `operation` fail with `error` (default a BackendError), before
   * they have any effect.
   */
  failNext(operation: Operation, count = 1, error?: unknown): void {
    const queue = this.failures.get(operation) ?? [];
    for (let i = 0; i < count; i++) queue.push(error ?? new BackendError(this.name, operation, new Error("injected failure")));
    this.failures.set(operation, queue);
  }

  /**
   * Makes every call hang (before any effect) until the returned function is called. Calls still
   * honour their signal and timeout.
   */
  stall(): () => void {
    if (!this.stalled) {
      let resume!: () => void;
      const promise = new Promise<void>((r) => (resume = r));
      this.stalled = { promise, resume };
    }
    const stalled = this.stalled;
    return () => {
      if (this.stalled === stalled) this.stalled = null;
      stalled.resume();
    };
  }

  /** Delays every call's effect by `requestMs` and its reply by `replyMs` (on the clock). */
  setLatency(requestMs: number, replyMs: number): void {
    this.requestLatencyMs = requestMs;
    this.replyLatencyMs = replyMs;
  }

  /** The next `count` calls take effect, but their replies never arrive (they time out). */
  dropNextReplies(count = 1): void {
    this.dropReplies += count;
  }

  /** Forgets every plan and lease, like a server restarted without persistence. */
  loseState(): void {
    this.resources.clear();
  }

  async ensurePlan(resource: string, plan: Plan, opts: EnsurePlanOptions): Promise<void> {
    return this.call("ensurePlan", opts, () => {
      const wanted = canonicalPlan(plan);
      const record = this.resources.get(resource);
      if (!record) {
        this.resources.set(resource, {
          plan: wanted,
          graceUntil: this.clock.now() + Math.max(0, opts.graceMs),
          fencing: 0,
          grants: new Map(),
        });
        return;
      }
      const stored = parsePlan(record.plan);
      if (!stored || canonicalPlan(stored) !== wanted) throw new PlanMismatchError(resource, record.plan, wanted);
    });
  }

  async readPlan(resource: string, opts: CallOptions): Promise<Plan | null> {
    return this.call("readPlan", opts, () => {
      const record = this.resources.get(resource);
      return record ? parsePlan(record.plan) : null;
    });
  }

  async tryAcquire(
    resource: string,
    candidates: readonly number[],
    holderId: string,
    ttlMs: number,
    opts: CallOptions,
  ): Promise<Lease | null> {
    return this.call("tryAcquire", opts, () => {
      const record = this.resources.get(resource);
      if (!record) throw new PlanMissingError(resource);
      const now = this.clock.now();
      if (now < record.graceUntil) return null;
      const partitions = parsePlan(record.plan)?.partitions ?? 0;
      for (const partition of candidates) {
        if (!Number.isInteger(partition) || partition < 0 || partition >= partitions) continue;
        const grant = record.grants.get(partition);
        if (grant && grant.expiresAt > now) continue;
        const token = randomUUID();
        const fencingToken = ++record.fencing;
        record.grants.set(partition, { holderId, token, fencingToken, expiresAt: now + ttlMs });
        return { resource, partition, holderId, token, fencingToken };
      }
      return null;
    });
  }

  async renew(lease: Lease, ttlMs: number, opts: CallOptions): Promise<boolean> {
    return this.call("renew", opts, () => {
      const grant = this.liveGrant(lease);
      if (!grant) return false;
      grant.expiresAt = this.clock.now() + ttlMs;
      return true;
    });
  }

  async release(lease: Lease, opts: CallOptions): Promise<void> {
    return this.call("release", opts, () => {
      if (this.liveGrant(lease)) this.resources.get(lease.resource)?.grants.delete(lease.partition);
    });
  }

  async inspect(resource: string, opts: CallOptions): Promise<PartitionState[]> {
    return this.call("inspect", opts, () => {
      const record = this.resources.get(resource);
      const plan = record ? parsePlan(record.plan) : null;
      if (!record || !plan) return [];
      const now = this.clock.now();
      return partitionPools(plan).map((pool, partition) => {
        const grant = record.grants.get(partition);
        const live = grant && grant.expiresAt > now ? grant : undefined;
        return {
          partition,
          pool,
          holderId: live?.holderId ?? null,
          expiresInMs: live ? live.expiresAt - now : null,
          fencingToken: live?.fencingToken ?? null,
        };
      });
    });
  }

  async close(): Promise<void> {
    this.stalled?.resume();
    this.stalled = null;
  }

  private liveGrant(lease: Lease): Grant | undefined {
    const grant = this.resources.get(lease.resource)?.grants.get(lease.partition);
    return grant && grant.token === lease.token && grant.expiresAt > this.clock.now() ? grant : undefined;
  }

  private call<T>(operation: Operation, opts: CallOptions, effect: () => T): Promise<T> {
    this.calls[operation]++;
    return withDeadline(
      `memory backend ${operation}`,
      opts,
      async (signal) => {
        if (this.stalled) await raceAbort(this.stalled.promise, signal);
        await this.sleep(this.requestLatencyMs, signal);
        const failure = this.failures.get(operation)?.shift();
        if (failure !== undefined) throw failure;
        const result = effect();
        if (this.dropReplies > 0) {
          this.dropReplies--;
          await raceAbort(new Promise<never>(() => undefined), signal);
        }
        await this.sleep(this.replyLatencyMs, signal);
        return result;
      },
      this.clock,
    );
  }

  private async sleep(ms: number, signal: AbortSignal): Promise<void> {
    if (ms <= 0) return;
    await raceAbort(new Promise<void>((resolve) => this.clock.setTimeout(resolve, ms)), signal);
  }
}

function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}
