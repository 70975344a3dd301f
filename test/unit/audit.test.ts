import { auditSlidingWindows } from "../support/audit.js";

describe("auditSlidingWindows", () => {
  test("counts a window over the limit and reports the worst ratio", () => {
    const events = [0, 100, 200, 999].map((t) => ({ t, units: 1 }));
    expect(auditSlidingWindows(events, 4, 1000)).toMatchObject({ overLimitWindows: 0, worstRatio: 1 });
    expect(auditSlidingWindows(events, 3, 1000)).toMatchObject({ overLimitWindows: 1, worstRatio: 4 / 3, worstAt: 0 });
  });

  test("windows are half-open: events exactly intervalMs apart are in different windows", () => {
    const events = [{ t: 0, units: 2 }, { t: 1000, units: 2 }];
    expect(auditSlidingWindows(events, 2, 1000).overLimitWindows).toBe(0);
    expect(auditSlidingWindows([{ t: 0, units: 2 }, { t: 999.999, units: 2 }], 2, 1000).overLimitWindows).toBe(1);
  });

  test("fractional units are exact at the resolution: 0.1 × 10 is exactly 1", () => {
    const events = Array.from({ length: 10 }, (_, i) => ({ t: i, units: 0.1 }));
    expect(auditSlidingWindows(events, 1, 1000).overLimitWindows).toBe(0);
    expect(auditSlidingWindows([...events, { t: 50, units: 0.001 }], 1, 1000).overLimitWindows).toBe(1);
  });
});
