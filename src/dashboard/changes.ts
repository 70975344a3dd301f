import type { DashboardSnapshot } from "./snapshot.js";

/**
 * LeaseChange is one thing that happened between two readings of a resource. Readings are
 * samples, so a lease that expired and was taken by another holder between two of them shows as
 * `moved`; one seen free in between shows as `freed`, then `taken`.
 */
export type LeaseChange =
  /** A free partition got a holder. */
  | { readonly kind: "taken"; readonly partition: number; readonly holderId: string }
  /** A partition changed holder. */
  | { readonly kind: "moved"; readonly partition: number; readonly from: string; readonly to: string }
  /** A partition's lease ended (released or expired). */
  | { readonly kind: "freed"; readonly partition: number; readonly holderId: string }
  /** A grace period began: no lease is granted for `graceMs` (as read). */
  | { readonly kind: "grace-started"; readonly graceMs: number }
  | { readonly kind: "grace-ended" }
  /** The stored plan's epoch changed: null → n is a new plan, n → null a deleted one. */
  | { readonly kind: "epoch"; readonly from: number | null; readonly to: number | null }
  | { readonly kind: "holder-joined"; readonly holderId: string }
  /** A holder's record is gone (it closed, or expired with its leases). */
  | { readonly kind: "holder-left"; readonly holderId: string }
  /** Reading the backend started failing; the page shows the last good reading meanwhile. */
  | { readonly kind: "backend-failing"; readonly reason: string }
  | { readonly kind: "backend-back" };

/**
 * changesBetween lists what changed from reading `before` to reading `after`: epoch first, then
 * grace, holders joining, partitions in index order, holders leaving. Nothing for the first
 * reading (`before` null): what was there already did not happen now.
 */
export function changesBetween(before: DashboardSnapshot | null, after: DashboardSnapshot): LeaseChange[] {
  if (before === null) return [];
  const changes: LeaseChange[] = [];
  if (before.epoch !== after.epoch) changes.push({ kind: "epoch", from: before.epoch, to: after.epoch });
  if (before.graceMs === 0 && after.graceMs > 0) changes.push({ kind: "grace-started", graceMs: after.graceMs });
  if (before.graceMs > 0 && after.graceMs === 0) changes.push({ kind: "grace-ended" });

  const wasThere = new Set(before.holders.map((h) => h.holderId));
  const isThere = new Set(after.holders.map((h) => h.holderId));
  for (const h of after.holders) if (!wasThere.has(h.holderId)) changes.push({ kind: "holder-joined", holderId: h.holderId });

  const previous = new Map(before.partitions.map((p) => [p.partition, p.holderId]));
  for (const p of after.partitions) {
    const from = previous.get(p.partition) ?? null;
    const to = p.holderId;
    if (from === to) continue;
    if (from === null) changes.push({ kind: "taken", partition: p.partition, holderId: to! });
    else if (to === null) changes.push({ kind: "freed", partition: p.partition, holderId: from });
    else changes.push({ kind: "moved", partition: p.partition, from, to });
  }
  // Partitions a smaller new plan no longer has were freed with it.
  const remaining = new Set(after.partitions.map((p) => p.partition));
  for (const p of before.partitions) {
    if (!remaining.has(p.partition) && p.holderId !== null) changes.push({ kind: "freed", partition: p.partition, holderId: p.holderId });
  }

  for (const h of before.holders) if (!isThere.has(h.holderId)) changes.push({ kind: "holder-left", holderId: h.holderId });
  return changes;
}
