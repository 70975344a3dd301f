import type { Plan, StoredPlan } from "./plan.js";
import type { PlanHistory } from "./timing.js";

/** Options every backend call takes. */
export interface CallOptions {
  /** Aborts the call; it rejects with `signal.reason`. */
  signal?: AbortSignal;
  /** Fails the call with a TimeoutError after this many ms. */
  timeoutMs?: number;
}

/** Options of {@link LeaseBackend.ensurePlan}. */
export interface EnsurePlanOptions extends CallOptions {
  /**
   * What the caller knows about earlier grants on the resource; decides the grace of a plan this
   * call stores (see `creationGraceMs`). Default `"unknown"`.
   */
  history?: PlanHistory;
}

/** Lease is an exclusive right to one partition until it expires, as granted by a backend. */
export interface Lease {
  /** The resource the partition belongs to. */
  readonly resource: string;
  /** The partition index, 0 ≤ partition < plan.partitions. */
  readonly partition: number;
  /** Who holds it. */
  readonly holderId: string;
  /** A unique token for this grant; renew and release act only while it still matches. */
  readonly token: string;
  /** A number that grows with every grant of this partition, where the backend has one. */
  readonly fencingToken: number | null;
  /** The plan epoch it was granted under; it is not renewed once the stored epoch differs. */
  readonly epoch: number;
}

/** What {@link LeaseBackend.tryAcquire} asks for. */
export interface AcquireRequest {
  readonly resource: string;
  /**
   * The stored plan the caller runs under, epoch and all; nothing is granted unless the stored one
   * is exactly this (equal epoch numbers are not enough: after a total state loss a different
   * plan can be stored under the same number). The lease's TTL is its `leaseTtlMs`.
   */
  readonly plan: StoredPlan;
  /** Partitions to try, in this order; the first free one is granted. */
  readonly candidates: readonly number[];
  readonly holderId: string;
}

/** What {@link LeaseBackend.tryAcquire} answered. */
export type AcquireResult =
  | { readonly kind: "granted"; readonly lease: Lease }
  /** Every candidate is held by someone. */
  | { readonly kind: "taken" }
  /** A grace period runs: nothing is granted for `remainingMs` more (by the backend's clock). */
  | { readonly kind: "grace"; readonly remainingMs: number }
  /** The stored plan is not the request's: read it again. `epoch` is the stored one's. */
  | { readonly kind: "plan-changed"; readonly epoch: number };

/**
 * HolderRecord is what a limiter publishes about itself beside its leases, so that every limiter
 * can compute the same fair share without a server deciding (see src/limiter/fair-share.ts).
 */
export interface HolderRecord {
  readonly holderId: string;
  /** The pool it belongs to, or null. */
  readonly pool: string | null;
  /** Whole partitions it wants now (headroom included, within its own bounds). */
  readonly wants: number;
  /** Its weight in the fair share, > 0 (default 1). */
  readonly weight: number;
  /** Partitions it is guaranteed whenever it wants them. */
  readonly reserve: number;
  /** The partitions it holds. */
  readonly held: readonly number[];
  /** Its recent demand, in units per interval (admitted plus queued and refused), for displays. */
  readonly demand: number;
  /** Its recent admitted rate, in units per interval, for displays. */
  readonly rate: number;
}

/** A holder record as read back from a backend. */
export interface PublishedHolder extends HolderRecord {
  /**
   * When the record was first published, in the backend's own order (server ms, a revision):
   * only compared with other `since` values of the same resource, to break ties the same way in
   * every process.
   */
  readonly since: number;
  /** ms until the record expires unless published again; null when the backend cannot tell. */
  readonly expiresInMs: number | null;
}

/** What {@link LeaseBackend.heartbeat} sends: the renewal of every held lease and the holder's record. */
export interface HeartbeatRequest {
  readonly resource: string;
  /** The stored plan the caller runs under; nothing is renewed or published unless it is exactly the stored one. */
  readonly plan: StoredPlan;
  /** Published (or refreshed) for the plan's `leaseTtlMs`; it expires with the holder's leases. */
  readonly holder: HolderRecord;
  /** The leases to renew, all of `resource` and `holder.holderId`. May be empty. */
  readonly leases: readonly Lease[];
  /**
   * Set when the caller holds a lease past its local deadline: a backend that revives expired
   * leases (`revivesExpiredLeases`) then answers `revivedAgoMs` from a fresh reading.
   */
  readonly proveContinuity?: boolean;
}

/** What {@link LeaseBackend.heartbeat} answered. */
export interface HeartbeatResult {
  /**
   * Per lease of the request, in order: true when it was extended to the plan's TTL from when the
   * backend received the call; false when it is not this grant any more or the plan differs.
   */
  readonly renewed: readonly boolean[];
  /** Whether the stored plan is exactly the request's. */
  readonly samePlan: boolean;
  /** The stored plan's epoch; null without a (readable) plan. */
  readonly epoch: number | null;
  /** ms left of a running grace period, 0 when none. */
  readonly graceMs: number;
  /** Every live holder record of the resource, the caller's included. */
  readonly holders: readonly PublishedHolder[];
  /**
   * For a backend that revives leases, when the request asked (`proveContinuity`): a lower bound,
   * in ms of the backend's clock, on how long ago it last revived leases, read during this call.
   * A renewed lease whose earliest possible expiry comes after that revival never expired.
   */
  readonly revivedAgoMs?: number;
}

/** PartitionState is one partition as a backend sees it, for status displays. */
export interface PartitionState {
  /** The partition index. */
  readonly partition: number;
  /** The pool the plan reserves it for; null when shared. */
  readonly pool: string | null;
  /** The current holder, or null when free. */
  readonly holderId: string | null;
  /** Time left on the lease by the backend's clock, in ms; null when free or unknown. */
  readonly expiresInMs: number | null;
  /** The fencing token of the current grant, where the backend has one. */
  readonly fencingToken: number | null;
  /** The plan epoch of the current grant; null when free or unknown. */
  readonly epoch: number | null;
}

/** ResourceState is everything a backend stores about one resource, for `status` and the dashboard. */
export interface ResourceState {
  /** The stored plan, or null. */
  readonly stored: StoredPlan | null;
  /** ms left of a running grace period, 0 when none. */
  readonly graceMs: number;
  /** Every partition of the stored plan; empty without a plan. */
  readonly partitions: readonly PartitionState[];
  /** Every live holder record. */
  readonly holders: readonly PublishedHolder[];
}

/**
 * LeaseTtlRule says which lease TTLs a backend can honour exactly; the limiter's constructor
 * rejects any other `leaseTtlMs` with a ConfigError naming this rule.
 */
export interface LeaseTtlRule {
  /** Shortest TTL, in ms. */
  readonly minMs: number;
  /** Longest TTL, in ms. */
  readonly maxMs: number;
  /** TTLs must be a multiple of this many ms (1000: whole seconds; 1: any whole ms). */
  readonly stepMs: number;
  /** Why, in words, e.g. `"etcd lease TTLs are whole seconds, at least 2 s"`. */
  readonly reason: string;
}

/**
 * LeaseBackend grants exclusive, expiring, token-checked leases on partitions and keeps each
 * resource's plan and its holders' records. Backends know nothing about pacing; every timing
 * decision lives in the limiter, which never trusts a backend's clock for its own deadlines.
 * Graces are applied by the backend on its own clock, with lengths from src/contract/timing.ts
 * and the stored plan, never from a caller.
 *
 * Every method honours `signal` and `timeoutMs`: it rejects with `signal.reason` or a
 * TimeoutError, and never hangs on a dead server. A failed call throws (a BackendError where the
 * failure is the server's); it never extends a lease. `partitioned-rate-limiter/testing` exports
 * the conformance suite every backend passes.
 */
export interface LeaseBackend {
  /** A short name for messages and metrics, e.g. `"redis"`. */
  readonly name: string;
  /** Which TTLs this backend can grant. */
  readonly leaseTtlRule: LeaseTtlRule;
  /**
   * Whether a restore or failover can bring back a lease that had already expired (etcd revives
   * every lease of a snapshot for a full TTL). false promises that a lease the backend renews was
   * never expired on it (absolute expiries survive a restore, as in Redis RDB files): only then
   * does a limiter use a partition again that passed its local deadline, when a renewal during a
   * grace finds it still its grant (docs/guarantee.md, G2). Absent means true; such a backend
   * proves a lapsed lease's continuity with `revivedAgoMs`, or the lease is released.
   */
  readonly revivesExpiredLeases?: boolean;
  /**
   * Stores `plan` as epoch 1 if the resource has no plan, with the grace of `creationGraceMs(plan,
   * opts.history)` unless the backend proves that nothing it granted before can still be in use;
   * otherwise returns the stored plan unchanged (the caller compares it). Rejects with
   * PlanMismatchError when the stored plan is unreadable or from an incompatible version.
   * A backend that detects it forgot leases (a new server identity) starts the backend-epoch grace.
   */
  ensurePlan(resource: string, plan: Plan, opts: EnsurePlanOptions): Promise<StoredPlan>;
  /** The stored plan, or null; PlanMismatchError when it is unreadable or from version 0.1. */
  readPlan(resource: string, opts: CallOptions): Promise<StoredPlan | null>;
  /**
   * Stores `plan` as the next epoch (or epoch 1 where none is stored) with the switch grace
   * `switchGraceMs(stored, plan)`: renewals of older-epoch leases are refused from now on.
   * With `expectedEpoch`, rejects with PlanMismatchError when the stored epoch differs.
   */
  replacePlan(resource: string, plan: Plan, opts: CallOptions & { expectedEpoch?: number }): Promise<StoredPlan>;
  /**
   * Deletes the stored plan and starts `deletionGraceMs`; a later plan is created with a grace.
   * Resolves false when there was none.
   */
  deletePlan(resource: string, opts: CallOptions): Promise<boolean>;
  /**
   * Tries the candidates in order and grants the first free one for `ttlMs`, in one round trip
   * where the backend allows. Rejects with PlanMissingError when the resource has no plan.
   */
  tryAcquire(request: AcquireRequest, opts: CallOptions): Promise<AcquireResult>;
  /**
   * Renews every lease of the request and publishes the holder's record, returning every live
   * record: one round trip where the backend allows. Never rejects for a missing plan: then
   * nothing is renewed and `epoch` is null.
   */
  heartbeat(request: HeartbeatRequest, opts: CallOptions): Promise<HeartbeatResult>;
  /** Ends `lease` if it is still this grant; otherwise does nothing. */
  release(lease: Lease, opts: CallOptions): Promise<void>;
  /** Everything stored about `resource`. */
  inspect(resource: string, opts: CallOptions): Promise<ResourceState>;
  /** Frees what the backend itself opened. Injected clients are the caller's to close. */
  close(): Promise<void>;
}
