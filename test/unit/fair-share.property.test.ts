import fc from "fast-check";
import { fairShares } from "../../src/limiter/fair-share.js";
import { simulate, type SimConfig, type SimFault } from "../support/simulation.js";

/**
 * Fair share on virtual time, as a property: saturated processes with random weights and
 * reservations join and leave at random times, some crash or pause past their TTL; all share one
 * MemoryLeaseBackend. Throughout, no window exceeds the limit; once the last change has settled,
 * every live process holds its weighted max-min share (docs/fair-share.md) within one partition,
 * and together they hold every partition.
 */

interface Deployment {
  cfg: SimConfig;
  /** When the last join, leave, restart or resume happened. */
  lastChangeAt: number;
}

const deploymentArb: fc.Arbitrary<Deployment> = fc
  .record({
    processes: fc.integer({ min: 2, max: 5 }),
    partitions: fc.integer({ min: 4, max: 24 }),
    limitPerPartition: fc.integer({ min: 5, max: 20 }),
    slicesPerInterval: fc.integer({ min: 5, max: 10 }),
    leaseTtlMs: fc.integer({ min: 2000, max: 4000 }),
    weights: fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 5, maxLength: 5 }),
    reserves: fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 5, maxLength: 5 }),
    joins: fc.array(fc.integer({ min: 0, max: 8000 }), { minLength: 5, maxLength: 5 }),
    leaver: fc.option(fc.record({ slot: fc.integer({ min: 0, max: 4 }), at: fc.integer({ min: 2000, max: 10_000 }) }), { nil: undefined }),
    faults: fc.array(
      fc.record({
        kind: fc.constantFrom("crash", "pause"),
        target: fc.integer({ min: 0, max: 4 }),
        at: fc.integer({ min: 1000, max: 10_000 }),
        scale: fc.double({ min: 0.3, max: 2, noNaN: true }),
      }),
      { maxLength: 2 },
    ),
    drift: fc.array(fc.double({ min: -0.0009, max: 0.0009, noNaN: true }), { minLength: 5, maxLength: 5 }),
    seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
  })
  .map((r): Deployment => {
    // Reservations that fit: a reservation beyond the partitions is honoured only in part, which
    // test/unit/fair-share.test.ts covers; here every holder's reserve must be honoured.
    const reserves = r.reserves.slice(0, r.processes);
    while (reserves.reduce((a, b) => a + b, 0) > r.partitions - 1) reserves[reserves.findIndex((x) => x > 0)]!--;
    const joinAtMs = r.joins.slice(0, r.processes).map((t, i) => (i === 0 ? 0 : t));
    const leaveAtMs = joinAtMs.map((join, i) => (r.leaver && r.leaver.slot % r.processes === i && i !== 0 ? Math.max(join + 1000, r.leaver.at) : null));
    const faults: SimFault[] = r.faults.map((f) => {
      const span = Math.round(r.leaseTtlMs * f.scale);
      return f.kind === "crash"
        ? { at: f.at, kind: "crash", target: f.target, restartAfterMs: span }
        : { at: f.at, kind: "pause", target: f.target, durationMs: span };
    });
    const lastChangeAt = Math.max(
      ...joinAtMs,
      ...leaveAtMs.map((t) => t ?? 0),
      ...faults.map((f) => f.at + (f.kind === "crash" ? f.restartAfterMs : f.kind === "pause" ? f.durationMs : 0)),
    );
    // Settling: the records of the change reach everyone within a renew period, crashed holders'
    // leases and records expire within a TTL, surpluses go back after a hysteresis (2 s here),
    // each hand-over waits a quiet time, and acquire retries back off up to a quarter TTL.
    const settleMs = 3 * r.leaseTtlMs + 4000;
    return {
      lastChangeAt,
      cfg: {
        limit: r.limitPerPartition * r.partitions,
        intervalMs: 1000,
        partitions: r.partitions,
        processes: r.processes,
        leaseTtlMs: r.leaseTtlMs,
        slicesPerInterval: r.slicesPerInterval,
        durationMs: lastChangeAt + settleMs,
        costs: [1],
        concurrency: 3,
        drift: r.drift,
        faults,
        precreatePlan: true,
        seed: r.seed,
        weights: r.weights.slice(0, r.processes),
        reserves,
        joinAtMs,
        leaveAtMs,
      },
    };
  });

describe("fair share on virtual time", () => {
  test("random joins, leaves, weights, reserves, crashes and pauses: 0 windows over, and every process within one partition of its share once settled (60 deployments)", async () => {
    await fc.assert(
      fc.asyncProperty(deploymentArb, async ({ cfg }) => {
        const result = await simulate(cfg);
        expect(result.audit.overLimitWindows).toBe(0);
        expect(result.final.length).toBeGreaterThan(0);
        // The shares every process should compute from the live processes' records (all saturated).
        const expected = fairShares(
          { partitions: cfg.partitions, pools: {} },
          result.final.map((h, i) => ({ holderId: h.holderId, pool: null, wants: cfg.partitions, weight: h.weight, reserve: h.reserve, held: [], since: i })),
        );
        const report = result.final.map((h) => `${h.holderId} w${h.weight} r${h.reserve}: held ${h.held}, share ${expected.get(h.holderId)!.total}`).join("; ");
        for (const h of result.final) {
          const share = expected.get(h.holderId)!.total;
          if (Math.abs(h.held - share) > 1) throw new Error(`not settled on the fair share: ${report}`);
          if (h.held < Math.min(h.reserve, cfg.partitions)) throw new Error(`reserve not honoured: ${report}`);
        }
        const held = result.final.reduce((s, h) => s + h.held, 0);
        if (held !== cfg.partitions) throw new Error(`${held} of ${cfg.partitions} partitions held: ${report}`);
      }),
      { numRuns: 60 },
    );
  }, 300_000);
});
