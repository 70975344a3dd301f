import { decodeHolderRecord } from "../contract/holder-record.js";
import type { PublishedHolder } from "../contract/lease-backend.js";
import type { RawRecord } from "./redis-scripts.js";

/** Holder records as the Redis scripts return them, decoded; records that do not decode are left out. */
export function toPublishedHolders(records: readonly RawRecord[]): PublishedHolder[] {
  const out: PublishedHolder[] = [];
  for (const r of records) {
    const record = decodeHolderRecord(r.holderId, r.json);
    if (record) out.push({ ...record, since: r.since, expiresInMs: Number.isFinite(r.msLeft) ? r.msLeft : null });
  }
  return out;
}
