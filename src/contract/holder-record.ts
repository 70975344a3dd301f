import { ConfigError } from "../errors/config-error.js";
import type { HolderRecord } from "./lease-backend.js";
import { finiteNumber, holderIdValue } from "./validate.js";

/**
 * The stored form of a {@link HolderRecord}, shared by the backends that keep records as text.
 * Records come from other processes (and other versions): decoding is defensive and never throws.
 */

/** Checks a record a limiter is about to publish; throws ConfigError naming the field. */
export function validateHolderRecord(record: HolderRecord, partitions: number): HolderRecord {
  if (typeof record !== "object" || record === null) throw new ConfigError("holder", record, "a HolderRecord");
  const holderId = holderIdValue("holder.holderId", record.holderId);
  const pool = record.pool === null ? null : typeof record.pool === "string" ? record.pool : invalid("holder.pool", record.pool, "a pool name or null");
  const wants = finiteNumber("holder.wants", record.wants, { min: 0, max: partitions, integer: true });
  const weight = finiteNumber("holder.weight", record.weight, { min: 0, minExclusive: true, max: 1e6 });
  const reserve = finiteNumber("holder.reserve", record.reserve, { min: 0, max: partitions, integer: true });
  if (!Array.isArray(record.held)) invalid("holder.held", record.held, "an array of partition indexes");
  const held = record.held.map((p, i) => finiteNumber(`holder.held[${i}]`, p, { min: 0, max: partitions - 1, integer: true }));
  const demand = finiteNumber("holder.demand", record.demand, { min: 0 });
  const rate = finiteNumber("holder.rate", record.rate, { min: 0 });
  return { holderId, pool, wants, weight, reserve, held, demand, rate };
}

function invalid(option: string, value: unknown, allowed: string): never {
  throw new ConfigError(option, value, allowed);
}

/** Encodes a record as compact JSON (the holder id is the key it is stored under, not repeated). */
export function encodeHolderRecord(record: HolderRecord): string {
  return JSON.stringify({
    pool: record.pool,
    wants: record.wants,
    weight: record.weight,
    reserve: record.reserve,
    held: record.held,
    demand: round(record.demand),
    rate: round(record.rate),
  });
}

/** Decodes a stored record of `holderId`; null when it is not a valid record. */
export function decodeHolderRecord(holderId: string, text: string): HolderRecord | null {
  try {
    const v = JSON.parse(text) as Record<string, unknown>;
    const numberIn = (x: unknown, min: number): number | null => (typeof x === "number" && Number.isFinite(x) && x >= min ? x : null);
    const wants = numberIn(v.wants, 0);
    const weight = numberIn(v.weight, 0);
    const reserve = numberIn(v.reserve, 0);
    const demand = numberIn(v.demand, 0) ?? 0;
    const rate = numberIn(v.rate, 0) ?? 0;
    const pool = v.pool === null || typeof v.pool === "string" ? v.pool : undefined;
    const held = Array.isArray(v.held) && v.held.every((p) => Number.isSafeInteger(p) && (p as number) >= 0) ? (v.held as number[]) : null;
    if (wants === null || !Number.isInteger(wants) || weight === null || weight === 0 || reserve === null || !Number.isInteger(reserve) || pool === undefined || held === null) return null;
    return { holderId, pool, wants, weight, reserve, held, demand, rate };
  } catch {
    return null;
  }
}

/** Three decimals are plenty for a display figure; above 1e15 a double has no decimals to drop, and `n * 1000` could overflow to Infinity (which JSON writes as null). */
function round(n: number): number {
  return n >= 1e15 ? n : Math.round(n * 1000) / 1000;
}
