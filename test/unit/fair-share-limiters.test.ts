import { runFleet, jainIndex } from "../support/fleet.js";

// Fair share between limiters that publish their demand beside their leases (issue 12), on
// virtual time: every limiter computes the same allocation from the same records; no server.

const QUOTA = { limit: 200, intervalMs: 1000, partitions: 20, leaseTtlMs: 15_000 };
const TTL = QUOTA.leaseTtlMs;

describe("fair share from published demand", () => {
  test("staggered joins: each joiner holds its fair share within one TTL plus one second; Jain's index >= 0.99; 0 windows over", async () => {
    const joins = [0, 6_000, 10_000, 14_000];
    const run = await runFleet(QUOTA, joins.map((joinAt) => ({ joinAt })), 50_000);
    expect(run.audit.overLimitWindows).toBe(0);
    // Every joiner holds at least its share (5) minus one within one TTL plus one second of joining.
    // A holder above its share learns of a joiner at its own next heartbeat (a third of the TTL).
    joins.forEach((joinAt, i) => {
      const at = run.heldReachedAt(i, joinAt, (h) => h >= 4);
      expect([i, at - joinAt <= TTL + 1_000]).toEqual([i, true]);
    });
    // After the last join, from when everyone holds its share: every member within one partition.
    const settled = run.held.find(([t, h]) => t >= 14_000 && h.every((x) => Math.abs(x - 5) <= 1))![0];
    expect(settled - 14_000).toBeLessThanOrEqual(TTL + 1_000);
    for (const [t, h] of run.held) if (t >= settled) for (const x of h) expect(Math.abs(x - 5)).toBeLessThanOrEqual(1);
    const rates = joins.map((_, i) => run.unitsBetween(i, settled + 1_000, 50_000));
    expect(jainIndex(rates)).toBeGreaterThanOrEqual(0.99);
  }, 120_000);

  test("weights 1:2:3:4, all saturated: shares within one partition of 2/4/6/8 of 20", async () => {
    const run = await runFleet(QUOTA, [1, 2, 3, 4].map((weight) => ({ joinAt: 0, options: { weight } })), 30_000);
    expect(run.audit.overLimitWindows).toBe(0);
    const last = run.held.at(-1)![1];
    [2, 4, 6, 8].forEach((share, i) => expect(Math.abs(last[i]! - share)).toBeLessThanOrEqual(1));
  }, 120_000);

  test("a worker with reserve: 5 joining a saturated group has 5 partitions within one TTL plus one second", async () => {
    const run = await runFleet(QUOTA, [{ joinAt: 0 }, { joinAt: 0 }, { joinAt: 0 }, { joinAt: 8_000, options: { reserve: 5 } }], 30_000);
    expect(run.audit.overLimitWindows).toBe(0);
    const at = run.heldReachedAt(3, 8_000, (h) => h >= 5);
    expect(at - 8_000).toBeLessThanOrEqual(TTL + 1_000);
  }, 120_000);

  test("a pool's idle partitions are lent, and come back within about a renew period when the pool wants them", async () => {
    const pools = { ingest: 4 };
    const run = await runFleet({ ...QUOTA, pools }, [
      { joinAt: 0, options: { pools } },
      { joinAt: 0, leaveAt: 5_000, options: { pools, pool: "ingest" } },
      { joinAt: 20_000, options: { pools, pool: "ingest" } },
    ], 40_000);
    expect(run.audit.overLimitWindows).toBe(0);
    // Once the pool's member left, the other holds everything (the pool's four lent to it).
    expect(run.heldReachedAt(0, 5_000, (h) => h === 20) - 5_000).toBeLessThanOrEqual(TTL + 1_000);
    // The pool's new member gets its four back, and its share of the shared ones.
    const back = run.heldReachedAt(2, 20_000, (h) => h >= 4) - 20_000;
    expect(back).toBeLessThanOrEqual(TTL / 3 + 2_000);
  }, 120_000);

  test("stable demand for 60 s: no partition changes hands", async () => {
    const run = await runFleet(QUOTA, [0, 0, 0].map((joinAt) => ({ joinAt })), 90_000);
    expect(run.audit.overLimitWindows).toBe(0);
    const moved = run.moves.filter((m) => m.t >= 30_000 && m.t < 90_000);
    expect(moved).toEqual([]);
  }, 120_000);

  test("utilisation: 4 saturated processes, 500/s over 20 partitions (2.5 units per partition per slice), unit costs: >= 98% of the paced ceiling", async () => {
    const quota = { limit: 500, intervalMs: 1000, partitions: 20, leaseTtlMs: 15_000 };
    const run = await runFleet(quota, [0, 0, 0, 0].map((joinAt) => ({ joinAt })), 24_000);
    expect(run.audit.overLimitWindows).toBe(0);
    const units = [0, 1, 2, 3].reduce((s, m) => s + run.unitsBetween(m, 4_000, 24_000), 0);
    const ceiling = (500 * 20) / ((1000 + 5) / 1000) / 1.001;
    expect(units / ceiling).toBeGreaterThanOrEqual(0.98);
  }, 120_000);
});

describe("ramp-up of a single saturated caller on a free quota (500/s, 20 partitions)", () => {
  const quota = { limit: 500, intervalMs: 1000, partitions: 20 };
  const ceiling = 500 / (1005 / 1000) / 1.001;
  for (const [name, member] of [
    ["a plain `await acquire()` loop", { joinAt: 0, loops: 1 }],
    ["a pipeline pulling one item of cost 5 at a time", { joinAt: 0, loops: 1, cost: 5 }],
  ] as const) {
    test(`${name} reaches 95% of the paced ceiling within 1 s of its first admission`, async () => {
      const run = await runFleet(quota, [member], 6_000);
      expect(run.audit.overLimitWindows).toBe(0);
      const first = run.admissions[0]!.t - 1_000;
      // The second after the first second: a full window at the reached pace.
      const rate = run.unitsBetween(0, first + 1_000, first + 2_000);
      expect(rate / ceiling).toBeGreaterThanOrEqual(0.95);
    });
  }
});
