import type { PublishedHolder } from "../contract/lease-backend.js";
import type { StoredPlan } from "../contract/plan.js";
import { fairShares } from "../limiter/fair-share.js";

/** HolderStatus is a published holder record with the fair share every limiter computes from the same records. */
export type HolderStatus = PublishedHolder & {
  /** Whole partitions the holder is allotted by `fairShares` over all published records. */
  readonly fairShare: number;
};

/**
 * holderStatuses adds each holder's fair share to its record, ordered as the allocation orders
 * them (by `since`, then `holderId`), so `status` and the dashboard list holders alike.
 */
export function holderStatuses(stored: StoredPlan, holders: readonly PublishedHolder[]): HolderStatus[] {
  const shares = fairShares(stored.plan, holders);
  return [...holders]
    .sort((a, b) => a.since - b.since || (a.holderId < b.holderId ? -1 : a.holderId > b.holderId ? 1 : 0))
    .map((h) => ({ ...h, fairShare: shares.get(h.holderId)?.total ?? 0 }));
}
