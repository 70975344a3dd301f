import type { PublishedHolder } from "../contract/lease-backend.js";
import { partitionPools, type Plan } from "../contract/plan.js";
import { MinHeap } from "./min-heap.js";

/** The category of shared partitions in {@link FairShare.byCategory}; pools use their names. */
export const SHARED = "";

/** What the allocation reads of each holder: its published record, with `since` for ordering. */
export type ShareInput = Pick<PublishedHolder, "holderId" | "pool" | "wants" | "weight" | "reserve" | "held" | "since">;

/** One holder's fair share. */
export interface FairShare {
  /** Partitions allotted in all. */
  readonly total: number;
  /** Partitions allotted per category: {@link SHARED} or a pool's name (its own pool, or another pool's idle partitions lent to it). */
  readonly byCategory: ReadonlyMap<string, number>;
  /** How much of its reserve was honoured: less than `min(wants, reserve)` when holders published before it reserved the rest. */
  readonly reserved: number;
}

interface Entry {
  readonly input: ShareInput;
  readonly pool: string | null;
  readonly want: number;
  readonly weight: number;
  readonly alloc: Map<string, number>;
  readonly heldIn: Map<string, number>;
  total: number;
  reserved: number;
}

/**
 * fairShares computes every holder's share of the plan's partitions, in whole partitions, from the
 * holders' published records alone. Every limiter runs it over the same records and gets the
 * same answer: the order is fixed by the records (ties by `since`, then `holderId`), never by who
 * computes. No server decides.
 *
 * The allocation, in four steps (docs/fair-share.md):
 * 1. Reservations: in order of `since`, each holder gets `min(wants, reserve)` from its own pool,
 *    then from shared partitions, as long as they last (a later reservation that does not fit is
 *    honoured only in part: `reserved` says how much).
 * 2. Each pool's partitions go to its members.
 * 3. Shared partitions go to everyone.
 * 4. Partitions a pool does not want are lent to everyone else.
 * Within steps 2-4 partitions go one at a time to the holder with the least allotted per weight
 * that still wants more (weighted max-min fairness, "water filling"); among equals, first to one
 * that already holds a partition of that category beyond its allotment (so stable demand moves
 * nothing), then by `since` and `holderId`.
 *
 * Cost: O((holders + partitions) × log holders).
 */
export function fairShares(plan: Pick<Plan, "partitions" | "pools">, holders: readonly ShareInput[]): Map<string, FairShare> {
  const owners = partitionPools(plan);
  const pools = Object.keys(plan.pools).sort();
  const remaining = new Map<string, number>([[SHARED, 0], ...pools.map((p): [string, number] => [p, 0])]);
  for (const owner of owners) remaining.set(owner ?? SHARED, (remaining.get(owner ?? SHARED) ?? 0) + 1);

  const seen = new Set<string>();
  const entries: Entry[] = [];
  for (const h of [...holders].sort(bySince)) {
    if (seen.has(h.holderId)) continue;
    seen.add(h.holderId);
    const heldIn = new Map<string, number>();
    for (const p of h.held) {
      if (!Number.isInteger(p) || p < 0 || p >= plan.partitions) continue;
      const category = owners[p] ?? SHARED;
      heldIn.set(category, (heldIn.get(category) ?? 0) + 1);
    }
    entries.push({
      input: h,
      pool: h.pool !== null && h.pool in plan.pools ? h.pool : null,
      want: Math.max(0, Math.min(Math.floor(h.wants), plan.partitions)),
      weight: h.weight > 0 && Number.isFinite(h.weight) ? h.weight : 1,
      alloc: new Map(),
      heldIn,
      total: 0,
      reserved: 0,
    });
  }

  const give = (e: Entry, category: string, n: number) => {
    e.alloc.set(category, (e.alloc.get(category) ?? 0) + n);
    e.total += n;
    remaining.set(category, (remaining.get(category) ?? 0) - n);
  };

  // 1. Reservations, first come first served.
  for (const e of entries) {
    const target = Math.min(e.want, Math.max(0, Math.floor(e.input.reserve)));
    for (const category of e.pool === null ? [SHARED] : [e.pool, SHARED]) {
      const n = Math.min(target - e.reserved, remaining.get(category) ?? 0);
      if (n > 0) {
        give(e, category, n);
        e.reserved += n;
      }
    }
  }
  // 2-4. Water filling per category.
  for (const pool of pools) fill(entries.filter((e) => e.pool === pool), pool, remaining, give);
  fill(entries, SHARED, remaining, give);
  for (const pool of pools) fill(entries.filter((e) => e.pool !== pool), pool, remaining, give);

  const result = new Map<string, FairShare>();
  for (const e of entries) result.set(e.input.holderId, { total: e.total, byCategory: e.alloc, reserved: e.reserved });
  return result;
}

function fill(group: readonly Entry[], category: string, remaining: Map<string, number>, give: (e: Entry, category: string, n: number) => void): void {
  // Allotted per weight, compared without division so every process rounds alike.
  const less = (a: Entry, b: Entry): boolean => {
    const x = a.total * b.weight;
    const y = b.total * a.weight;
    if (x !== y) return x < y;
    const aHolds = (a.heldIn.get(category) ?? 0) > (a.alloc.get(category) ?? 0);
    const bHolds = (b.heldIn.get(category) ?? 0) > (b.alloc.get(category) ?? 0);
    if (aHolds !== bHolds) return aHolds;
    return bySince(a.input, b.input) < 0;
  };
  const heap = new MinHeap<Entry>(less);
  for (const e of group) if (e.total < e.want) heap.push(e);
  while ((remaining.get(category) ?? 0) > 0) {
    const e = heap.pop();
    if (!e) break;
    give(e, category, 1);
    if (e.total < e.want) heap.push(e);
  }
}

function bySince(a: ShareInput, b: ShareInput): number {
  if (a.since !== b.since) return a.since < b.since ? -1 : 1;
  return a.holderId < b.holderId ? -1 : a.holderId > b.holderId ? 1 : 0;
}
