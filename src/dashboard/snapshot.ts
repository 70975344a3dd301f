import type { ResourceState } from "../contract/lease-backend.js";
import { partitionPools, type Plan } from "../contract/plan.js";
import { holderStatuses, type HolderStatus } from "../cli/holder-status.js";

/** One partition as the dashboard shows it. */
export interface PartitionView {
  readonly partition: number;
  /** The pool the plan reserves it for; null when shared. */
  readonly pool: string | null;
  /** The current holder, or null when free. */
  readonly holderId: string | null;
  /** Time left on the lease by the backend's clock when it was read, in ms; null when free or unknown. */
  readonly expiresInMs: number | null;
  /** The plan epoch of the current grant; null when free or unknown. */
  readonly epoch: number | null;
}

/**
 * DashboardSnapshot is one reading of a resource, in the form the page renders. It carries the
 * plan, partition data and holder records only: never an address, a credential or a lease token,
 * since anyone who can open the page sees it.
 */
export interface DashboardSnapshot {
  readonly resource: string;
  /** The backend's kind (`"redis"`), never its address. */
  readonly backend: string;
  /** When the backend was read, in ms since the Unix epoch (for display only). */
  readonly readAt: number;
  /** The stored plan, or null when none is stored. */
  readonly plan: Plan | null;
  /** The stored plan's epoch, or null. */
  readonly epoch: number | null;
  /** ms left of a running grace period when read, 0 when none. */
  readonly graceMs: number;
  /** Every partition of the stored plan, in index order. */
  readonly partitions: readonly PartitionView[];
  /** Every live holder record with its fair share, in the allocation's order. */
  readonly holders: readonly HolderStatus[];
  /**
   * Why the last reading failed (e.g. `connect ECONNREFUSED`), or null when it succeeded. While it
   * fails, the rest is the last successful reading.
   */
  readonly error: string | null;
}

/** snapshotOf turns what `inspect` returned into a {@link DashboardSnapshot}, dropping fencing tokens. */
export function snapshotOf(resource: string, backend: string, state: ResourceState, readAt: number): DashboardSnapshot {
  const stored = state.stored;
  const owners = stored === null ? [] : partitionPools(stored.plan);
  return {
    resource,
    backend,
    readAt,
    plan: stored?.plan ?? null,
    epoch: stored?.epoch ?? null,
    graceMs: state.graceMs,
    partitions: state.partitions.map((p) => ({
      partition: p.partition,
      // Some backends report pools only through the plan; the plan assigns them by index.
      pool: p.pool ?? owners[p.partition] ?? null,
      holderId: p.holderId,
      expiresInMs: p.holderId === null ? null : p.expiresInMs,
      epoch: p.holderId === null ? null : p.epoch,
    })),
    holders: stored === null ? [] : holderStatuses(stored, state.holders),
    error: null,
  };
}
