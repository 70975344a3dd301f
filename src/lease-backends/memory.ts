import { randomUUID } from "node:crypto";
import { BackendError } from "../errors/backend-error.js";
import { PlanMismatchError } from "../errors/plan-mismatch-error.js";
import { PlanMissingError } from "../errors/plan-missing-error.js";
import { systemClock, type Clock } from "../contract/clock.js";
import { validateHolderRecord } from "../contract/holder-record.js";
import type {
  AcquireRequest,
  AcquireResult,
  CallOptions,
  EnsurePlanOptions,
  HeartbeatRequest,
  HeartbeatResult,
  HolderRecord,
  LeaseBackend,
  LeaseTtlRule,
  PartitionState,
  PublishedHolder,
  ResourceState,
  Lease,
} from "../contract/lease-backend.js";
import { encodeStoredPlan, partitionPools, validatePlan, type Plan, type StoredPlan } from "../contract/plan.js";
import { MAX_LEASE_TTL_MS, backendEpochGraceMs, creationGraceMs, deletionGraceMs, switchGraceMs } from "../contract/timing.js";
import { withDeadline } from "./call-deadline.js";

interface Grant {
  holderId: string;
  token: string;
  fencingToken: number;
  epoch: number;
  expiresAt: number;
}

interface Holder {
  record: HolderRecord;
  since: number;
  expiresAt: number;
}

interface ResourceRecord {
  /** The stored plan; null after deletePlan (a tombstone: grants and graces outlive the plan). */
  stored: StoredPlan | null;
  /** The epoch of the last plan, kept by a tombstone so that epochs keep growing. */
  lastEpoch: number;
  /** The server incarnation that last touched this record (a snapshot restore brings back an older one). */
  incarnation: number;
  graceUntil: number;
  fencing: number;
  grants: Map<number, Grant>;
  holders: Map<string, Holder>;
}

/** A copy of a MemoryLeaseBackend's state, from {@link MemoryLeaseBackend.snapshot}. */
export interface MemorySnapshot {
  /** @internal */
  readonly resources: ReadonlyMap<string, ResourceRecord>;
}

/** Options of {@link MemoryLeaseBackend}. */
export interface MemoryLeaseBackendOptions {
  /** The "server" clock leases expire on (default {@link systemClock}); share it with the limiters in tests. */
  clock?: Clock;
}

type Operation = "ensurePlan" | "readPlan" | "replacePlan" | "deletePlan" | "tryAcquire" | "heartbeat" | "release" | "inspect";

/**
 * MemoryLeaseBackend keeps plans, leases and holder records in this process, with the same
 * semantics as the real backends: exclusive, expiring on its clock, token-checked, plans with
 * epochs, graces applied on its own clock. Limiters in one process can share one instance; with a
 * VirtualClock it drives deterministic simulations.
 *
 * A resource's first plan starts at once: nothing was granted before this backend existed. It
 * offers fault injection for tests: {@link failNext}, {@link stall}, {@link setLatency},
 * {@link dropNextReplies}, and three kinds of state loss as real servers have them:
 * {@link loseState} (a restart without persistence), {@link restore} of a {@link snapshot} (a
 * restart from an older RDB/AOF file: plans survive, leases revert), and {@link failover} (a
 * promoted replica: everything survives, the server identity changes). After the last two the
 * first call that touches a resource notices the new identity and starts a grace of the stored
 * plan's TTL, as the Redis backend does with `run_id`.
 */
export class MemoryLeaseBackend implements LeaseBackend {
  /** `"memory"`. */
  readonly name = "memory";
  /** `restore(snapshot, { reviveLeases: true })` revives expired leases, as etcd does. */
  readonly revivesExpiredLeases = true;
  /** Any whole-ms TTL up to the library's maximum. */
  readonly leaseTtlRule: LeaseTtlRule = { minMs: 1, maxMs: MAX_LEASE_TTL_MS, stepMs: 1, reason: "the memory backend takes any whole ms" };
  private readonly clock: Clock;
  private resources = new Map<string, ResourceRecord>();
  private incarnation = 1;
  /** When the current incarnation began; nothing can be live from before it after this long. */
  private incarnationStartedAt = -Infinity;
  private readonly failures = new Map<Operation, unknown[]>();
  private stalled: { promise: Promise<void>; resume: () => void } | null = null;
  private requestLatencyMs = 0;
  private replyLatencyMs = 0;
  private dropReplies = 0;
  /** How many calls each operation received (tests assert exact call counts). */
  readonly calls: Record<Operation, number> = {
    ensurePlan: 0,
    readPlan: 0,
    replacePlan: 0,
    deletePlan: 0,
    tryAcquire: 0,
    heartbeat: 0,
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

  /** Forgets every plan, lease and record, like a server restarted without persistence. */
  loseState(): void {
    this.resources = new Map();
    this.newIncarnation();
  }

  /** A copy of the whole state now, for {@link restore}. */
  snapshot(): MemorySnapshot {
    return { resources: copyResources(this.resources) };
  }

  /**
   * Replaces the state with `snapshot` under a new server identity, like a server restarted from
   * an older RDB or AOF file: plans survive, leases granted or renewed since are forgotten or
   * carry old expiries. With `reviveLeases`, like etcd restored by `etcdctl snapshot restore`:
   * every lease in the snapshot lives a full TTL from now.
   */
  restore(snapshot: MemorySnapshot, options: { reviveLeases?: boolean } = {}): void {
    this.resources = copyResources(snapshot.resources);
    if (options.reviveLeases) {
      // As etcd does: every lease in the snapshot comes back with its full TTL from now, even one
      // that had expired (and was granted to someone else) since the snapshot was taken.
      const now = this.clock.now();
      for (const r of this.resources.values()) {
        const ttl = r.stored?.plan.leaseTtlMs ?? 0;
        for (const g of r.grants.values()) g.expiresAt = now + ttl;
      }
    }
    this.newIncarnation();
  }

  /** Keeps the whole state under a new server identity, like a replica promoted with every write. */
  failover(): void {
    this.newIncarnation();
  }

  async ensurePlan(resource: string, plan: Plan, opts: EnsurePlanOptions): Promise<StoredPlan> {
    const wanted = validatePlan(plan, "plan.");
    return this.call("ensurePlan", opts, () => {
      const record = this.touch(resource);
      if (record?.stored) return record.stored;
      const grace = creationGraceMs(wanted, opts.history ?? "unknown");
      const now = this.clock.now();
      // Provably fresh: no trace of the resource and the current incarnation is older than any
      // lease that could have been forgotten.
      const fresh = record === undefined && now - this.incarnationStartedAt > grace;
      return this.store(resource, record, wanted, fresh ? 0 : grace);
    });
  }

  async readPlan(resource: string, opts: CallOptions): Promise<StoredPlan | null> {
    return this.call("readPlan", opts, () => this.resources.get(resource)?.stored ?? null);
  }

  async replacePlan(resource: string, plan: Plan, opts: CallOptions & { expectedEpoch?: number }): Promise<StoredPlan> {
    const wanted = validatePlan(plan, "plan.");
    return this.call("replacePlan", opts, () => {
      const record = this.touch(resource);
      const current = record?.stored ?? null;
      if (opts.expectedEpoch !== undefined && (current?.epoch ?? 0) !== opts.expectedEpoch) {
        throw new PlanMismatchError(resource, JSON.stringify(current), "", `has epoch ${current?.epoch ?? "none"}, not the expected ${opts.expectedEpoch}`);
      }
      if (!current) return this.store(resource, record, wanted, creationGraceMs(wanted, "unknown"));
      return this.store(resource, record, wanted, switchGraceMs(current.plan, wanted));
    });
  }

  async deletePlan(resource: string, opts: CallOptions): Promise<boolean> {
    return this.call("deletePlan", opts, () => {
      const record = this.touch(resource);
      if (!record?.stored) return false;
      record.graceUntil = Math.max(record.graceUntil, this.clock.now() + deletionGraceMs(record.stored.plan));
      record.lastEpoch = record.stored.epoch;
      record.stored = null;
      return true;
    });
  }

  async tryAcquire(request: AcquireRequest, opts: CallOptions): Promise<AcquireResult> {
    return this.call("tryAcquire", opts, () => {
      const { resource, candidates, holderId } = request;
      const record = this.touch(resource);
      const stored = record?.stored;
      if (!record || !stored) throw new PlanMissingError(resource);
      if (!sameStored(stored, request.plan)) return { kind: "plan-changed", epoch: stored.epoch };
      const epoch = stored.epoch;
      const ttlMs = stored.plan.leaseTtlMs;
      const now = this.clock.now();
      if (now < record.graceUntil) return { kind: "grace", remainingMs: Math.ceil(record.graceUntil - now) };
      for (const partition of candidates) {
        if (!Number.isInteger(partition) || partition < 0 || partition >= stored.plan.partitions) continue;
        const grant = record.grants.get(partition);
        if (grant && grant.expiresAt > now) continue;
        const token = randomUUID();
        const fencingToken = ++record.fencing;
        record.grants.set(partition, { holderId, token, fencingToken, epoch, expiresAt: now + ttlMs });
        return { kind: "granted", lease: { resource, partition, holderId, token, fencingToken, epoch } };
      }
      return { kind: "taken" };
    });
  }

  async heartbeat(request: HeartbeatRequest, opts: CallOptions): Promise<HeartbeatResult> {
    return this.call("heartbeat", opts, () => {
      const { resource, leases } = request;
      const record = this.touch(resource);
      const now = this.clock.now();
      const stored = record?.stored;
      if (!record || !stored) {
        return { renewed: leases.map(() => false), samePlan: false, epoch: null, graceMs: record ? Math.ceil(Math.max(0, record.graceUntil - now)) : 0, holders: [] };
      }
      const graceMs = Math.ceil(Math.max(0, record.graceUntil - now));
      // Under another plan nothing is renewed and nothing published: the caller reads the plan anew.
      if (!sameStored(stored, request.plan)) {
        return { renewed: leases.map(() => false), samePlan: false, epoch: stored.epoch, graceMs, holders: this.liveHolders(record, now) };
      }
      const epoch = stored.epoch;
      const ttlMs = stored.plan.leaseTtlMs;
      const holder = validateHolderRecord(request.holder, stored.plan.partitions);
      const renewed = leases.map((lease) => {
        if (lease.resource !== resource || lease.epoch !== epoch) return false;
        const grant = this.liveGrant(lease);
        if (!grant) return false;
        grant.expiresAt = now + ttlMs;
        return true;
      });
      const previous = record.holders.get(holder.holderId);
      record.holders.set(holder.holderId, {
        record: holder,
        since: previous && previous.expiresAt > now ? previous.since : now,
        expiresAt: now + ttlMs,
      });
      // Leases are revived (restore with reviveLeases) only when an incarnation starts.
      const revivedAgoMs = request.proveContinuity ? Math.min(Number.MAX_SAFE_INTEGER, now - this.incarnationStartedAt) : undefined;
      return { renewed, samePlan: true, epoch: stored.epoch, graceMs, holders: this.liveHolders(record, now), ...(revivedAgoMs === undefined ? {} : { revivedAgoMs }) };
    });
  }

  async release(lease: Lease, opts: CallOptions): Promise<void> {
    return this.call("release", opts, () => {
      if (this.liveGrant(lease)) this.resources.get(lease.resource)?.grants.delete(lease.partition);
    });
  }

  async inspect(resource: string, opts: CallOptions): Promise<ResourceState> {
    return this.call("inspect", opts, () => {
      const record = this.resources.get(resource);
      const now = this.clock.now();
      if (!record) return { stored: null, graceMs: 0, partitions: [], holders: [] };
      const stored = record.stored;
      const partitions: PartitionState[] = stored
        ? partitionPools(stored.plan).map((pool, partition) => {
            const grant = record.grants.get(partition);
            const live = grant && grant.expiresAt > now ? grant : undefined;
            return {
              partition,
              pool,
              holderId: live?.holderId ?? null,
              expiresInMs: live ? live.expiresAt - now : null,
              fencingToken: live?.fencingToken ?? null,
              epoch: live?.epoch ?? null,
            };
          })
        : [];
      return { stored, graceMs: Math.max(0, record.graceUntil - now), partitions, holders: this.liveHolders(record, now) };
    });
  }

  async close(): Promise<void> {
    this.stalled?.resume();
    this.stalled = null;
  }

  private newIncarnation(): void {
    this.incarnation++;
    this.incarnationStartedAt = this.clock.now();
  }

  /**
   * The record of `resource`, after noticing a new server identity: a record last touched by an
   * earlier incarnation may hold forgotten leases, so nothing is granted for the stored plan's TTL.
   */
  private touch(resource: string): ResourceRecord | undefined {
    const record = this.resources.get(resource);
    if (record && record.incarnation !== this.incarnation) {
      record.incarnation = this.incarnation;
      const plan = record.stored?.plan;
      if (plan) record.graceUntil = Math.max(record.graceUntil, this.clock.now() + backendEpochGraceMs(plan));
    }
    return record;
  }

  private store(resource: string, record: ResourceRecord | undefined, plan: Plan, graceMs: number): StoredPlan {
    const now = this.clock.now();
    const target = record ?? {
      stored: null,
      lastEpoch: 0,
      incarnation: this.incarnation,
      graceUntil: -Infinity,
      fencing: 0,
      grants: new Map<number, Grant>(),
      holders: new Map<string, Holder>(),
    };
    const stored: StoredPlan = { plan, epoch: Math.max(target.lastEpoch, target.stored?.epoch ?? 0) + 1 };
    target.stored = stored;
    target.lastEpoch = stored.epoch;
    if (graceMs > 0) target.graceUntil = Math.max(target.graceUntil, now + graceMs);
    this.resources.set(resource, target);
    return stored;
  }

  private liveHolders(record: ResourceRecord, now: number): PublishedHolder[] {
    const out: PublishedHolder[] = [];
    for (const [id, h] of record.holders) {
      if (h.expiresAt <= now) record.holders.delete(id);
      else out.push({ ...h.record, since: h.since, expiresInMs: h.expiresAt - now });
    }
    return out;
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

/** Whether a request's plan is exactly the stored one (epoch and content). */
function sameStored(stored: StoredPlan, requested: StoredPlan): boolean {
  return encodeStoredPlan(stored) === encodeStoredPlan(requested);
}

function copyResources(resources: ReadonlyMap<string, ResourceRecord>): Map<string, ResourceRecord> {
  const copy = new Map<string, ResourceRecord>();
  for (const [name, r] of resources) {
    copy.set(name, {
      ...r,
      grants: new Map([...r.grants].map(([p, g]) => [p, { ...g }])),
      holders: new Map([...r.holders].map(([id, h]) => [id, { ...h }])),
    });
  }
  return copy;
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
