import { ConfigError } from "../errors/config-error.js";
import type { LeaseTtlRule } from "../contract/lease-backend.js";
import { partitionPools, type Plan, type StoredPlan } from "../contract/plan.js";
import {
  backendTimeoutMs,
  hysteresisMs,
  minimumSafetyMarginMs,
  quietMs,
  renewEveryMs,
  renewRetryMs,
  sliceLengthMs,
  windowSpanMs,
} from "../contract/timing.js";
import { capacityToCount, unitScaleOf } from "../contract/units.js";
import { finiteNumber } from "../contract/validate.js";

/** The per-process settings that are checked against a plan (they may not fit every plan). */
export interface ProcessSettings {
  readonly pool: string | null;
  readonly minPartitions: number | undefined;
  readonly maxPartitions: number | undefined;
  readonly reserve: number;
  readonly safetyMarginMs: number | undefined;
}

/**
 * PlanConfig is everything a limiter derives from one stored plan epoch and its own settings:
 * counting scale, slice, margins, the partitions it may hold. A limiter that follows the stored
 * plan builds a new one for each epoch.
 */
export interface PlanConfig {
  /** The stored plan this configuration is for (epoch 0: the own plan, before it was stored or read). */
  readonly stored: StoredPlan;
  readonly plan: Plan;
  readonly epoch: number;
  /** Counting units per unit (see contract/units.ts). */
  readonly scale: number;
  /** Units per interval of one partition. */
  readonly partitionCapacity: number;
  /** Counting units one partition admits per interval window. */
  readonly intervalCount: number;
  /** Counting units one partition admits at once (its burst): one slice's share. */
  readonly sliceCount: number;
  /** One slice, in ms. */
  readonly sliceMs: number;
  /** The paced interval window in ms: `(intervalMs + jitterMs) × (1 + driftFactor)`. */
  readonly windowMs: number;
  readonly quietMs: number;
  readonly safetyMarginMs: number;
  readonly renewEveryMs: number;
  readonly renewRetryMs: number;
  readonly backendTimeoutMs: number;
  readonly hysteresisMs: number;
  /** The pool of each partition ("" for shared), indexed by partition. */
  readonly categories: readonly string[];
  readonly pool: string | null;
  readonly minPartitions: number;
  readonly maxPartitions: number;
  readonly reserve: number;
  /** The largest cost in counting units that can ever pass: `maxPartitions × sliceCount`. */
  readonly maxCount: number;
}

/**
 * Derives a PlanConfig, throwing ConfigError when the settings do not fit the plan or the
 * backend's TTL rule (naming the option and what is allowed).
 */
export function resolvePlanConfig(plan: Plan, epoch: number, settings: ProcessSettings, ttlRule: LeaseTtlRule): PlanConfig {
  checkTtlRule(plan.leaseTtlMs, ttlRule);
  if (settings.pool !== null && !(settings.pool in plan.pools)) {
    throw new ConfigError("pool", settings.pool, `one of the pools in the plan (${Object.keys(plan.pools).join(", ") || "none defined: set pools"})`);
  }
  const minimumMargin = minimumSafetyMarginMs(plan);
  const safetyMarginMs = settings.safetyMarginMs === undefined
    ? minimumMargin
    : finiteNumber("safetyMarginMs", settings.safetyMarginMs, { min: minimumMargin });
  if (safetyMarginMs * 2 > plan.leaseTtlMs) {
    throw new ConfigError("safetyMarginMs", safetyMarginMs, `at most leaseTtlMs / 2 = ${plan.leaseTtlMs / 2}`, "a lease must stay usable for more than one renewal period after its margin");
  }
  const maxPartitions = settings.maxPartitions === undefined
    ? plan.partitions
    : finiteNumber("maxPartitions", settings.maxPartitions, { min: 1, max: plan.partitions, integer: true });
  const minPartitions = settings.minPartitions === undefined
    ? 0
    : finiteNumber("minPartitions", settings.minPartitions, { min: 0, max: maxPartitions, integer: true });
  const reserve = finiteNumber("reserve", settings.reserve, { min: 0, max: maxPartitions, integer: true });
  const scale = unitScaleOf(plan.limit);
  const partitionCapacity = plan.limit / plan.partitions;
  const intervalCount = capacityToCount(partitionCapacity, scale);
  const sliceCount = Math.floor(intervalCount / plan.slicesPerInterval);
  return {
    stored: { plan, epoch },
    plan,
    epoch,
    scale,
    partitionCapacity,
    intervalCount,
    sliceCount,
    sliceMs: sliceLengthMs(plan),
    windowMs: windowSpanMs(plan),
    quietMs: quietMs(plan),
    safetyMarginMs,
    renewEveryMs: renewEveryMs(plan),
    renewRetryMs: renewRetryMs(plan),
    backendTimeoutMs: backendTimeoutMs(plan, safetyMarginMs),
    hysteresisMs: hysteresisMs(plan),
    categories: partitionPools(plan).map((p) => p ?? ""),
    pool: settings.pool,
    minPartitions,
    maxPartitions,
    reserve,
    maxCount: maxPartitions * sliceCount,
  };
}

/** Throws ConfigError naming `leaseTtlMs` when `ttlMs` breaks the backend's rule. */
export function checkTtlRule(ttlMs: number, rule: LeaseTtlRule): void {
  if (!Number.isInteger(ttlMs) || ttlMs < rule.minMs || ttlMs > rule.maxMs || ttlMs % rule.stepMs !== 0) {
    const step = rule.stepMs === 1 ? "whole ms" : rule.stepMs === 1000 ? "whole seconds" : `multiples of ${rule.stepMs} ms`;
    throw new ConfigError("leaseTtlMs", ttlMs, `${step} from ${rule.minMs} to ${rule.maxMs} ms for this backend`, rule.reason);
  }
}
