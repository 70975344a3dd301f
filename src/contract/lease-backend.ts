import type { Plan } from "./plan.js";

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
   * When the plan does not exist yet and is stored by this call, the backend grants no lease on
   * the resource for this many ms (by the server's clock). A backend that lost its state cannot
   * tell a first start from a restart that forgot live leases; the grace lets every holder of a
   * forgotten lease reach its local deadline before anyone else takes the partition.
   */
  graceMs: number;
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
}

/**
 * LeaseBackend grants exclusive, expiring, token-checked leases on partitions. Backends know
 * nothing about pacing; every timing decision lives in the limiter, which never trusts a
 * backend's clock for its own deadlines.
 *
 * Every method honours `signal` and `timeoutMs`: it rejects with `signal.reason` or a
 * TimeoutError, and never hangs on a dead server. A failed call throws (a BackendError where the
 * failure is the server's); it never extends a lease.
 */
export interface LeaseBackend {
  /** A short name for messages and metrics, e.g. `"redis"`. */
  readonly name: string;
  /**
   * Stores `plan` for `resource` if none is stored, starting a grace period of `graceMs` in
   * which no lease is granted; otherwise verifies it, rejecting with PlanMismatchError when the
   * stored plan differs (or is unreadable).
   */
  ensurePlan(resource: string, plan: Plan, opts: EnsurePlanOptions): Promise<void>;
  /** The stored plan of `resource`, or null when none is stored. */
  readPlan(resource: string, opts: CallOptions): Promise<Plan | null>;
  /**
   * Tries `candidates` in the given order and grants the first free one for `ttlMs`, in one round
   * trip where the backend allows. Resolves null when every candidate is taken or a grace period
   * is running; rejects with PlanMissingError when the resource has no plan.
   */
  tryAcquire(
    resource: string,
    candidates: readonly number[],
    holderId: string,
    ttlMs: number,
    opts: CallOptions,
  ): Promise<Lease | null>;
  /** Extends `lease` to `ttlMs` from now if it is still this grant; false when it was lost. */
  renew(lease: Lease, ttlMs: number, opts: CallOptions): Promise<boolean>;
  /** Ends `lease` if it is still this grant; otherwise does nothing. */
  release(lease: Lease, opts: CallOptions): Promise<void>;
  /** Every partition of the stored plan with its holder; empty when no plan is stored. */
  inspect(resource: string, opts: CallOptions): Promise<PartitionState[]>;
  /** Frees what the backend itself opened. Injected clients are the caller's to close. */
  close(): Promise<void>;
}
