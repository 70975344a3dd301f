import fc from "fast-check";
import { simulate, type SimConfig, type SimFault } from "../support/simulation.js";

/**
 * The promise, on virtual time: many limiters on one MemoryLeaseBackend, random arrivals and
 * fractional costs, clock drift, and random faults and deployment events: pauses longer than the
 * TTL, crashes, graceful restarts, failed renewals, backend state loss, restores from snapshots
 * (plan kept, leases reverted), failovers, stalls, lost replies, latency, plan replacements (with
 * following or fixed limiters) and processes restarted with a changed setting. Every admission is
 * audited exactly: no window of intervalMs may hold more than the limit of the plan it was
 * admitted under (the lowest, for a window holding admissions of several plans).
 */

const millis = (n: number) => Math.round(n * 1000) / 1000;

const configArb: fc.Arbitrary<SimConfig> = fc
  .record({
    processes: fc.integer({ min: 1, max: 5 }),
    partitions: fc.integer({ min: 1, max: 24 }),
    limitPerPartition: fc.integer({ min: 1, max: 25 }),
    intervalMs: fc.constantFrom(200, 500, 1000, 2000),
    slicesPerInterval: fc.integer({ min: 1, max: 12 }),
    ttlExtra: fc.integer({ min: 0, max: 3000 }),
    costFractions: fc.array(fc.integer({ min: 1, max: 1000 }), { minLength: 1, maxLength: 3 }),
    concurrency: fc.integer({ min: 1, max: 3 }),
    durationMs: fc.integer({ min: 6000, max: 14000 }),
    drift: fc.array(fc.double({ min: -0.0009, max: 0.0009, noNaN: true }), { minLength: 5, maxLength: 5 }),
    precreatePlan: fc.boolean(),
    follow: fc.boolean(),
    seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
    faults: fc.array(
      fc.record({
        at: fc.double({ min: 0, max: 1, noNaN: true }),
        kind: fc.constantFrom(
          "pause", "crash", "restart", "renew-fail", "state-loss", "stall", "drop-replies", "latency",
          "restore", "failover", "replace", "misconfigured-restart",
        ),
        target: fc.integer({ min: 0, max: 4 }),
        scale: fc.double({ min: 0.2, max: 2.5, noNaN: true }),
        field: fc.constantFrom("slicesPerInterval", "leaseTtlMs", "jitterMs", "driftFactor", "limit"),
      }),
      { maxLength: 6 },
    ),
  })
  .map((r) => {
    const limit = r.limitPerPartition * r.partitions;
    // At least twice the minimum margin (two slices plus drift): the shortest TTL a plan allows.
    const leaseTtlMs = Math.max(1000, Math.ceil(4.5 * (r.intervalMs / r.slicesPerInterval + 10))) + r.ttlExtra;
    // Costs up to two partitions' slices, as multiples of 0.001: large enough to be split over
    // partitions, small enough that contending limiters keep making progress (a cost needing many
    // partitions at once can starve while others hold them; that is liveness, not the promise).
    const maxCost = Math.min(limit, 2 * r.limitPerPartition) / r.slicesPerInterval;
    const costs = r.costFractions.map((f) => Math.max(0.001, millis((maxCost * f) / 1000)));
    const faults: SimFault[] = r.faults.map((f) => {
      const at = 1000 + f.at * r.durationMs;
      const span = Math.round(leaseTtlMs * f.scale);
      switch (f.kind) {
        case "pause": return { at, kind: "pause", target: f.target, durationMs: span };
        case "crash": return { at, kind: "crash", target: f.target, restartAfterMs: span };
        case "restart": return { at, kind: "restart", target: f.target };
        case "renew-fail": return { at, kind: "renew-fail", count: 1 + f.target * 2 };
        case "state-loss": return { at, kind: "state-loss" };
        case "stall": return { at, kind: "stall", durationMs: span };
        case "drop-replies": return { at, kind: "drop-replies", count: 1 + f.target };
        case "restore": return { at, kind: "restore", ageMs: span };
        case "failover": return { at, kind: "failover" };
        case "replace": return { at, kind: "replace", limitFactor: [0.5, 1.5, 0.25, 3][f.target % 4]!, ...(f.target === 4 ? { slicesPerInterval: Math.max(1, r.slicesPerInterval - 1) } : {}) };
        case "misconfigured-restart": return { at, kind: "misconfigured-restart", target: f.target, field: f.field };
        default: return { at, kind: "latency", requestMs: span / 6, replyMs: span / 6, durationMs: span };
      }
    });
    return {
      limit, intervalMs: r.intervalMs, partitions: r.partitions, processes: r.processes, leaseTtlMs,
      slicesPerInterval: r.slicesPerInterval, durationMs: r.durationMs, costs, concurrency: r.concurrency,
      drift: r.drift, faults, precreatePlan: r.precreatePlan, seed: r.seed, follow: r.follow,
    };
  });

describe("the promise on virtual time", () => {
  test("no sliding window ever exceeds the limit, whatever the faults (200 random deployments)", async () => {
    await fc.assert(
      fc.asyncProperty(configArb, async (cfg) => {
        const result = await simulate(cfg);
        expect(result.audit.overLimitWindows).toBe(0);
        expect(result.audit.worstRatio).toBeLessThanOrEqual(1);
        expect(result.leftoverTimers).toBe(0);
      }),
      { numRuns: 200 },
    );
  }, 300_000);

  test("under saturating steady demand, admissions reach at least 97% of the limit", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          processes: fc.integer({ min: 1, max: 4 }),
          partitions: fc.integer({ min: 2, max: 30 }),
          slicesPerInterval: fc.integer({ min: 5, max: 10 }),
          unitsPerSlice: fc.integer({ min: 1, max: 4 }),
          cost: fc.constantFrom(1, 0.5, 0.25, 0.2, 0.1),
          drift: fc.array(fc.double({ min: -0.0009, max: 0.0009, noNaN: true }), { minLength: 4, maxLength: 4 }),
          seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
        }),
        async (r) => {
          // A process can use only whole costs of each slice it holds (FIFO, no reordering), so here
          // a partition's slice (limit / partitions / slicesPerInterval) is a whole number of costs;
          // README explains the packing loss otherwise. Mixed costs are covered by the safety property.
          const limit = r.unitsPerSlice * r.slicesPerInterval * r.partitions;
          const cfg: SimConfig = {
            limit, intervalMs: 1000, partitions: r.partitions, processes: r.processes, leaseTtlMs: 3000,
            slicesPerInterval: r.slicesPerInterval, durationMs: 24_000, costs: [r.cost],
            concurrency: 3, drift: r.drift, faults: [], precreatePlan: true, seed: r.seed,
          };
          const result = await simulate(cfg);
          expect(result.audit.overLimitWindows).toBe(0);
          // Steady state: from 4 s (leases spread) to the end: 20 s, so that counting whole bursts
          // of a slice at the window's edges (one slice of 100-200 ms) moves the rate by under 1%.
          const from = 1000 + 4000;
          const to = 1000 + 24_000;
          const units = result.admissions.filter((a) => a.t >= from && a.t < to).reduce((s, a) => s + a.units, 0);
          const rate = units / ((to - from) / 1000);
          expect(rate / limit).toBeGreaterThanOrEqual(0.97);
        },
      ),
      {
        numRuns: 25,
        // Found by this property: with one cost per slice, a timer set on an unrounded estimate
        // found the bucket a hair short and retried an eighth of a slice later, every slice (88%).
        examples: [[{ processes: 2, partitions: 2, slicesPerInterval: 6, unitsPerSlice: 1, cost: 1, drift: [0, 0, 0, 0], seed: 1 }]],
      },
    );
  }, 300_000);
});
