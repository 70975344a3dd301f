import fc from "fast-check";
import { validatePlan, type Plan } from "../../src/contract/plan.js";
import {
  MAX_LEASE_TTL_MS,
  backendEpochGraceMs,
  backendTimeoutMs,
  backoffMs,
  creationGraceMs,
  deletionGraceMs,
  hysteresisMs,
  lostHistoryWindowMs,
  maxBackoffMs,
  minimumSafetyMarginMs,
  quietMs,
  renewEveryMs,
  renewRetryMs,
  sliceLengthMs,
  switchGraceMs,
  unknownHistoryGraceMs,
  windowSpanMs,
} from "../../src/contract/timing.js";

// The relations docs/guarantee.md relies on, over random valid plans.
const planArb: fc.Arbitrary<Plan> = fc
  .record({
    intervalMs: fc.integer({ min: 1, max: 120_000 }),
    slicesPerInterval: fc.integer({ min: 1, max: 50 }),
    leaseTtlMs: fc.integer({ min: 100, max: MAX_LEASE_TTL_MS }),
    jitterMs: fc.integer({ min: 0, max: 200 }),
    driftFactor: fc.double({ min: 0, max: 0.1, noNaN: true }),
  })
  .filter((r) => r.jitterMs <= r.intervalMs)
  .map((r) => {
    try {
      return validatePlan({ limit: 1000, partitions: 10, ...r });
    } catch {
      return null;
    }
  })
  .filter((p): p is Plan => p !== null);

describe("timing relations", () => {
  test("the hand-over quiet time covers the bucket's hand-over gap, and the margin covers it plus the TTL's drift", () => {
    fc.assert(
      fc.property(planArb, (plan) => {
        const slice = sliceLengthMs(plan);
        // Burst c/k refilled at c per window: two holders stay within c when 2 × burst / rate passes between them.
        const gap = (2 * (1 / plan.slicesPerInterval)) / (1 / windowSpanMs(plan));
        expect(gap).toBeCloseTo(2 * slice, 6);
        expect(quietMs(plan)).toBeGreaterThan(gap * (1 + plan.driftFactor));
        const margin = minimumSafetyMarginMs(plan);
        expect(margin).toBeGreaterThanOrEqual(gap + plan.driftFactor * plan.leaseTtlMs + 5 - 1e-9);
        // validatePlan guarantees the lease stays usable for more than its margin.
        expect(plan.leaseTtlMs).toBeGreaterThanOrEqual(2 * margin);
      }),
      { numRuns: 500 },
    );
  });

  test("a renewal that times out leaves time for another before the deadline", () => {
    fc.assert(
      fc.property(planArb, (plan) => {
        const margin = minimumSafetyMarginMs(plan);
        const timeout = backendTimeoutMs(plan, margin);
        expect(timeout).toBeGreaterThanOrEqual(50);
        expect(timeout).toBeLessThanOrEqual(5_000);
        if (timeout > 50) expect(renewEveryMs(plan) + 2 * timeout + margin).toBeLessThanOrEqual(plan.leaseTtlMs + 1);
        expect(renewRetryMs(plan)).toBeLessThanOrEqual(Math.max(50, renewEveryMs(plan)));
        expect(hysteresisMs(plan)).toBeGreaterThanOrEqual(2 * plan.intervalMs);
      }),
      { numRuns: 500 },
    );
  });

  test("graces: a switch outlasts every old lease by a window of either plan; an unknown history outlasts any TTL", () => {
    fc.assert(
      fc.property(planArb, planArb, (a, b) => {
        expect(switchGraceMs(a, b)).toBeGreaterThan(a.leaseTtlMs + Math.max(windowSpanMs(a), windowSpanMs(b)));
        expect(deletionGraceMs(a)).toBe(switchGraceMs(a, a));
        expect(unknownHistoryGraceMs(b)).toBeGreaterThan(MAX_LEASE_TTL_MS + windowSpanMs(b));
        expect(backendEpochGraceMs(b)).toBe(unknownHistoryGraceMs(b));
        expect(creationGraceMs(b, "unknown")).toBe(unknownHistoryGraceMs(b));
        expect(creationGraceMs(b, "lost")).toBe(b.leaseTtlMs);
        expect(creationGraceMs(b, "fresh")).toBe(0);
        // A limiter vouches for "lost" only while a plan stored after its last clean heartbeat could
        // not have granted anything yet (its switch grace: a TTL and a window).
        expect(lostHistoryWindowMs(b, 100)).toBeLessThan(b.leaseTtlMs + windowSpanMs(b));
        expect(lostHistoryWindowMs(b, 100) + 100).toBeLessThanOrEqual(switchGraceMs(b, b));
      }),
      { numRuns: 500 },
    );
  });

  test("backoff grows from 50 ms to at most a quarter TTL (1 s), with jitter in the upper half", () => {
    const plan = validatePlan({ limit: 10, intervalMs: 1000, partitions: 1, leaseTtlMs: 15_000 });
    expect(maxBackoffMs(plan)).toBe(1_000);
    expect(backoffMs(plan, 1, () => 0)).toBe(50);
    expect(backoffMs(plan, 1, () => 0.999999)).toBeCloseTo(100, 3);
    expect(backoffMs(plan, 30, () => 0.999999)).toBeLessThanOrEqual(1_000);
    expect(backoffMs(plan, 30, () => 0)).toBe(500);
  });
});
