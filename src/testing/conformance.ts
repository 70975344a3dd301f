import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { PlanMismatchError } from "../errors/plan-mismatch-error.js";
import { PlanMissingError } from "../errors/plan-missing-error.js";
import { TimeoutError } from "../errors/timeout-error.js";
import type { AcquireResult, HolderRecord, Lease, LeaseBackend } from "../contract/lease-backend.js";
import { validatePlan, type Plan, type StoredPlan } from "../contract/plan.js";
import { MAX_LEASE_TTL_MS, backendEpochGraceMs, switchGraceMs } from "../contract/timing.js";

/**
 * What a backend's runner hands the conformance suite. Real backends run against real servers on
 * real time; the memory backend runs on a VirtualClock.
 */
export interface ConformanceTarget {
  /** A backend connected to the server under test. */
  backend: LeaseBackend;
  /** Another, independent client of the same server (a separate connection), closed by the suite. */
  newClient(): Promise<LeaseBackend>;
  /** The lease TTL the suite uses (a valid `leaseTtlMs` of the backend); the shortest it supports is best. */
  ttlMs: number;
  /** Lets `ms` of time pass (virtual or real). */
  wait(ms: number): Promise<void>;
  /** Makes the server stop answering without closing connections; resolves to a resume function. */
  stall(): Promise<() => Promise<void>>;
  /**
   * Takes a snapshot of the server's state and returns a function that restores it under a new
   * server identity (a restart from an RDB file, a promoted replica that lacks the latest writes).
   * Omit it for a backend that cannot be restored that way, and say why in `restoreNotApplicable`.
   */
  snapshot?(): Promise<() => Promise<void>>;
  /** Why `snapshot` is not offered (required when it is omitted). */
  restoreNotApplicable?: string;
}

/** The test functions the suite registers with; jest's, vitest's and mocha's globals fit. */
export interface TestApi {
  describe(name: string, fn: () => void): void;
  test(name: string, fn: () => Promise<void>, timeoutMs?: number): void;
  beforeAll(fn: () => Promise<void>, timeoutMs?: number): void;
  afterAll(fn: () => Promise<void>, timeoutMs?: number): void;
  beforeEach(fn: () => Promise<void>, timeoutMs?: number): void;
}

const CALL = { timeoutMs: 10_000 };

/**
 * Registers the LeaseBackend conformance suite for one backend. `setup` runs once before the
 * tests, `teardown` after. Every backend of this package passes it; a backend for another store
 * proves itself the same way:
 *
 * ```ts
 * import { describeLeaseBackendConformance } from "partitioned-rate-limiter/testing";
 * describeLeaseBackendConformance("my-store", async () => ({ backend, newClient, ttlMs: 2000, wait, stall, restoreNotApplicable: "…" }), async () => {});
 * ```
 *
 * `api` defaults to the global `describe`, `test`, `beforeAll`, `afterAll` and `beforeEach` of
 * the test runner. Assertions use `node:assert`, so the suite depends on no test framework.
 */
export function describeLeaseBackendConformance(
  name: string,
  setup: () => Promise<ConformanceTarget>,
  teardown: () => Promise<void>,
  api: TestApi = globalTestApi(),
): void {
  const { describe, test, beforeAll, afterAll, beforeEach } = api;
  describe(`LeaseBackend conformance: ${name}`, () => {
    let t: ConformanceTarget;
    let plan: Plan;
    let resource: string;
    // Registered before setup runs, so sized for the longest TTL a backend may use (60 s).
    const longTest = () => 150_000;
    const newResource = async (history: "fresh" | "lost" = "fresh"): Promise<string> => {
      const r = `conf-${randomUUID().slice(0, 8)}`;
      const stored = await t.backend.ensurePlan(r, plan, { history, ...CALL });
      assert.equal(stored.epoch, 1);
      return r;
    };
    const acquire = (candidates: number[], holder = "holder-a", backend = t.backend, stored: StoredPlan = { plan, epoch: 1 }, res = resource): Promise<AcquireResult> =>
      backend.tryAcquire({ resource: res, plan: stored, candidates, holderId: holder }, CALL);
    const lease = async (candidates: number[], holder = "holder-a", backend = t.backend): Promise<Lease> => {
      const result = await acquire(candidates, holder, backend);
      assert.equal(result.kind, "granted", `expected a grant of one of ${candidates.join(",")}, got ${JSON.stringify(result)}`);
      return (result as { lease: Lease }).lease;
    };
    const record = (holderId: string, held: number[] = [], extra: Partial<HolderRecord> = {}): HolderRecord => ({
      holderId, pool: null, wants: held.length, weight: 1, reserve: 0, held, demand: 0, rate: 0, ...extra,
    });
    const heartbeat = (holderId: string, leases: Lease[], extra: Partial<HolderRecord> = {}, stored: StoredPlan = { plan, epoch: 1 }, backend = t.backend) =>
      backend.heartbeat({ resource, plan: stored, holder: record(holderId, leases.map((l) => l.partition), extra), leases }, CALL);

    beforeAll(async () => {
      t = await setup();
      plan = validatePlan({ limit: 100, intervalMs: 1000, partitions: 10, pools: { ingest: 2 }, leaseTtlMs: t.ttlMs });
    }, 120_000);
    afterAll(async () => {
      await teardown();
    }, 60_000);
    beforeEach(async () => {
      resource = await newResource();
    }, 30_000);

    test("declares a lease TTL rule that admits the suite's TTL and stays within the library's maximum", async () => {
      const rule = t.backend.leaseTtlRule;
      assert.ok(rule.minMs >= 1 && rule.minMs <= rule.maxMs && rule.maxMs <= MAX_LEASE_TTL_MS, JSON.stringify(rule));
      assert.ok(t.ttlMs >= rule.minMs && t.ttlMs <= rule.maxMs && t.ttlMs % rule.stepMs === 0);
      assert.ok(rule.reason.length > 0);
    });

    test("ensurePlan stores a plan once as epoch 1 and returns the stored plan after; readPlan returns it", async () => {
      const again = await t.backend.ensurePlan(resource, plan, { history: "unknown", ...CALL });
      assert.deepEqual(again, { plan, epoch: 1 });
      const other = validatePlan({ ...plan, limit: 101 });
      assert.deepEqual(await t.backend.ensurePlan(resource, other, CALL), { plan, epoch: 1 }, "a differing plan is not stored over the first");
      assert.deepEqual(await t.backend.readPlan(resource, CALL), { plan, epoch: 1 });
      assert.equal(await t.backend.readPlan(`${resource}-none`, CALL), null);
    });

    test("tryAcquire on a resource without a plan rejects with PlanMissingError; heartbeat reports no epoch", async () => {
      await assert.rejects(acquire([0], "holder-a", t.backend, { plan, epoch: 1 }, `${resource}-none`), (e) => PlanMissingError.is(e));
      const beat = await t.backend.heartbeat({ resource: `${resource}-none`, plan: { plan, epoch: 1 }, holder: record("holder-a"), leases: [] }, CALL);
      assert.equal(beat.epoch, null);
      assert.equal(beat.samePlan, false);
    });

    test("tryAcquire takes the first free candidate in the given order; two holders never share", async () => {
      const a = await lease([3, 1, 2], "holder-a");
      assert.deepEqual({ resource: a.resource, partition: a.partition, holderId: a.holderId, epoch: a.epoch }, { resource, partition: 3, holderId: "holder-a", epoch: 1 });
      assert.deepEqual(await acquire([3], "holder-b"), { kind: "taken" });
      const b = await lease([3, 1], "holder-b");
      assert.equal(b.partition, 1);
      assert.notEqual(b.token, a.token);
      // Out-of-range candidates are never granted.
      assert.deepEqual(await acquire([10, -1, 99], "holder-c"), { kind: "taken" });
    });

    test("a request under another plan with the same epoch number is refused: the whole stored plan must match", async () => {
      // After a total state loss a different plan can be stored under the same epoch number; a
      // holder still running the old one must be told, not granted.
      const other: StoredPlan = { plan: validatePlan({ ...plan, slicesPerInterval: 5 }), epoch: 1 };
      assert.deepEqual(await acquire([0], "holder-a", t.backend, other), { kind: "plan-changed", epoch: 1 });
      const a = await lease([0], "holder-a");
      const beat = await heartbeat("holder-a", [a], {}, other);
      assert.deepEqual([beat.renewed, beat.samePlan, beat.epoch], [[false], false, 1]);
      const ok = await heartbeat("holder-a", [a]);
      assert.deepEqual([ok.renewed, ok.samePlan], [[true], true]);
    });

    test("a lease frees itself after its TTL; the old holder's heartbeat reports it not renewed", async () => {
      const a = await lease([0], "holder-a");
      await t.wait(plan.leaseTtlMs + 700);
      const b = await lease([0], "holder-b");
      const beat = await heartbeat("holder-a", [a]);
      assert.deepEqual(beat.renewed, [false]);
      // The old holder's release does not free the new holder's lease.
      await t.backend.release(a, CALL);
      assert.deepEqual(await acquire([0], "holder-c"), { kind: "taken" });
      assert.equal(b.partition, 0);
    }, longTest());

    test("heartbeat renews every lease of the call that is still this grant, and only those", async () => {
      const a0 = await lease([0], "holder-a");
      const a1 = await lease([1], "holder-a");
      const a2 = await lease([2], "holder-a");
      const forged: Lease = { ...a1, token: `${a1.token}-forged` };
      await t.wait(plan.leaseTtlMs * 0.6);
      const beat = await heartbeat("holder-a", [a0, forged, a2]);
      assert.deepEqual(beat.renewed, [true, false, true]);
      await t.wait(plan.leaseTtlMs * 0.6);
      // Past the original TTL: the renewed ones are still held, the unrenewed one is free.
      assert.deepEqual(await acquire([0, 2], "holder-b"), { kind: "taken" });
      assert.equal((await lease([1], "holder-b")).partition, 1);
    }, longTest());

    test("heartbeat publishes holder records beside the leases: everyone reads everyone's, in publication order", async () => {
      const a = await lease([0], "holder-a");
      const first = await heartbeat("holder-a", [a], { wants: 4, weight: 2, reserve: 1, demand: 12.5, rate: 7.25 });
      assert.equal(first.epoch, 1);
      assert.equal(first.samePlan, true);
      assert.equal(first.graceMs, 0);
      assert.deepEqual(first.holders.map((h) => h.holderId), ["holder-a"]);
      await t.wait(20);
      const second = await heartbeat("holder-b", [], { pool: "ingest", wants: 2 });
      const byId = new Map(second.holders.map((h) => [h.holderId, h]));
      assert.equal(byId.size, 2);
      const ha = byId.get("holder-a")!;
      assert.deepEqual({ pool: ha.pool, wants: ha.wants, weight: ha.weight, reserve: ha.reserve, held: ha.held }, { pool: null, wants: 4, weight: 2, reserve: 1, held: [0] });
      assert.ok(Math.abs(ha.demand - 12.5) < 0.01 && Math.abs(ha.rate - 7.25) < 0.01);
      assert.equal(byId.get("holder-b")!.pool, "ingest");
      // Not smaller: a server that runs both publications late (queued behind a stall, as a
      // Redlock minority does under load) can stamp both in one ms; ties sort by holderId.
      assert.ok(ha.since <= byId.get("holder-b")!.since, "the first publisher has the smaller or equal since");
      for (const h of second.holders) assert.ok(h.expiresInMs === null || (h.expiresInMs > 0 && h.expiresInMs <= plan.leaseTtlMs + 1000), String(h.expiresInMs));
      // Publishing again keeps `since`.
      const again = await heartbeat("holder-a", [a], { wants: 5 });
      const haAgain = again.holders.find((h) => h.holderId === "holder-a")!;
      assert.equal(haAgain.since, ha.since);
      assert.equal(haAgain.wants, 5);
    });

    test("a holder record expires with its TTL unless published again", async () => {
      await heartbeat("holder-a", [], { wants: 1 });
      await t.wait(plan.leaseTtlMs + 700);
      const beat = await heartbeat("holder-b", [], { wants: 1 });
      assert.deepEqual(beat.holders.map((h) => h.holderId), ["holder-b"]);
    }, longTest());

    test("release removes only one's own lease", async () => {
      const a = await lease([0], "holder-a");
      await t.backend.release({ ...a, token: "not-the-token" }, CALL);
      assert.deepEqual(await acquire([0], "holder-b"), { kind: "taken" });
      await t.backend.release(a, CALL);
      assert.deepEqual((await heartbeat("holder-a", [a])).renewed, [false]);
      assert.equal((await lease([0], "holder-b")).partition, 0);
      // Releasing twice is harmless.
      await t.backend.release(a, CALL);
    });

    test("fencing tokens, where offered, grow with every grant of a partition", async () => {
      const a = await lease([0], "holder-a");
      await t.backend.release(a, CALL);
      const b = await lease([0], "holder-b");
      if (a.fencingToken === null) assert.equal(b.fencingToken, null);
      else assert.ok(b.fencingToken! > a.fencingToken, `${b.fencingToken} > ${a.fencingToken}`);
    });

    test("inspect shows the plan, every partition with pool, holder, time left and epoch, and the records", async () => {
      await lease([0], "holder-a");
      const b = await lease([5], "holder-b");
      await heartbeat("holder-b", [b], { wants: 3 });
      const state = await t.backend.inspect(resource, CALL);
      assert.deepEqual(state.stored, { plan, epoch: 1 });
      assert.equal(state.graceMs, 0);
      assert.equal(state.partitions.length, plan.partitions);
      assert.deepEqual(state.partitions.map((s) => s.partition), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      assert.deepEqual(pick(state.partitions[0]!), { pool: "ingest", holderId: "holder-a", epoch: 1 });
      assert.deepEqual(pick(state.partitions[1]!), { pool: "ingest", holderId: null, epoch: null });
      assert.equal(state.partitions[1]!.expiresInMs, null);
      assert.deepEqual(pick(state.partitions[5]!), { pool: null, holderId: "holder-b", epoch: 1 });
      const left = state.partitions[0]!.expiresInMs;
      assert.ok(left === null || (left > 0 && left <= plan.leaseTtlMs + 1000), String(left));
      assert.deepEqual(state.holders.map((h) => [h.holderId, h.wants]), [["holder-b", 3]]);
      assert.deepEqual(await t.backend.inspect(`${resource}-none`, CALL), { stored: null, graceMs: 0, partitions: [], holders: [] });
    });

    test("replacePlan stores the next epoch: old-epoch leases are not renewed, nothing is granted for the switch grace", async () => {
      const a = await lease([0], "holder-a");
      const next = validatePlan({ ...plan, limit: 50 });
      await assert.rejects(t.backend.replacePlan(resource, next, { expectedEpoch: 7, ...CALL }), (e) => PlanMismatchError.is(e));
      const started = Date.now();
      const stored = await t.backend.replacePlan(resource, next, { expectedEpoch: 1, ...CALL });
      assert.deepEqual(stored, { plan: next, epoch: 2 });
      assert.deepEqual(await t.backend.readPlan(resource, CALL), { plan: next, epoch: 2 });
      const beat = await heartbeat("holder-a", [a]);
      assert.deepEqual([beat.renewed, beat.samePlan, beat.epoch], [[false], false, 2]);
      assert.deepEqual(await acquire([1], "holder-b"), { kind: "plan-changed", epoch: 2 });
      const during = await acquire([1], "holder-b", t.backend, stored);
      assert.equal(during.kind, "grace");
      const grace = switchGraceMs(plan, next);
      const remaining = (during as { remainingMs: number }).remainingMs;
      assert.ok(remaining <= grace + 1000 && remaining >= grace - (Date.now() - started) - 1100, `grace ${remaining} of ${grace}`);
      assert.ok((await t.backend.inspect(resource, CALL)).graceMs > 0);
    });

    test("after the switch grace the new epoch grants; leases carry it", async () => {
      const next = validatePlan({ ...plan, limit: 50 });
      const stored = await t.backend.replacePlan(resource, next, CALL);
      // A backend whose TTLs come in steps rounds its grace leases up to one (etcd: whole
      // seconds, and expired keys go up to 500 ms late); a longer grace is safe, only slower.
      await t.wait(switchGraceMs(plan, next) + 1200 + t.backend.leaseTtlRule.stepMs);
      const result = await acquire([1], "holder-b", t.backend, stored);
      assert.equal(result.kind, "granted");
      assert.equal((result as { lease: Lease }).lease.epoch, 2);
    }, longTest());

    test("deletePlan removes the plan; a plan stored later starts with a grace, whatever the history says", async () => {
      const a = await lease([0], "holder-a");
      assert.equal(await t.backend.deletePlan(resource, CALL), true);
      assert.equal(await t.backend.deletePlan(resource, CALL), false);
      assert.equal(await t.backend.readPlan(resource, CALL), null);
      await assert.rejects(acquire([1]), (e) => PlanMissingError.is(e));
      const beat = await heartbeat("holder-a", [a]);
      assert.deepEqual([beat.renewed, beat.epoch], [[false], null]);
      const again = await t.backend.ensurePlan(resource, plan, { history: "lost", ...CALL });
      assert.ok(again.epoch > 1, "epochs keep growing across a deletion");
      const result = await acquire([1], "holder-b", t.backend, again);
      assert.equal(result.kind, "grace", JSON.stringify(result));
    });

    test("against a stalled server, calls fail by their timeout or abort and never hang", async () => {
      const a = await lease([0], "holder-a");
      const resume = await t.stall();
      try {
        const started = Date.now();
        const short = { timeoutMs: 300 };
        const timeouts = [
          t.backend.tryAcquire({ resource, plan: { plan, epoch: 1 }, candidates: [1], holderId: "holder-a" }, short),
          t.backend.heartbeat({ resource, plan: { plan, epoch: 1 }, holder: record("holder-a", [0]), leases: [a] }, short),
          t.backend.release(a, short),
          t.backend.inspect(resource, short),
          t.backend.readPlan(resource, short),
          t.backend.ensurePlan(resource, plan, short),
        ].map((p) => p.then(() => "resolved", (e: unknown) => e));
        const outcome = Promise.all(timeouts);
        await t.wait(400);
        for (const r of await outcome) assert.ok(TimeoutError.is(r), `expected a TimeoutError, got ${String(r)}`);
        // Real time: each failed within about its timeout (virtual time: trivially).
        assert.ok(Date.now() - started < 3000);
        const controller = new AbortController();
        const reason = new Error("caller gave up");
        const aborted = t.backend.tryAcquire({ resource, plan: { plan, epoch: 1 }, candidates: [1], holderId: "holder-a" }, { signal: controller.signal });
        controller.abort(reason);
        await assert.rejects(aborted, (e) => e === reason);
        const pre = new AbortController();
        pre.abort(reason);
        await assert.rejects(t.backend.readPlan(resource, { signal: pre.signal }), (e) => e === reason);
      } finally {
        await resume();
      }
      // Works again after the stall.
      assert.deepEqual(await t.backend.readPlan(resource, CALL), { plan, epoch: 1 });
    }, 30_000);

    test("20 clients racing over 10 partitions: each partition goes to at most one", async () => {
      const clients = await Promise.all(Array.from({ length: 20 }, () => t.newClient()));
      try {
        const won = await Promise.all(
          clients.map(async (client, i) => {
            const leases: Lease[] = [];
            for (let round = 0; round < 3; round++) {
              const candidates = shuffle([...Array(plan.partitions).keys()]);
              const result = await client.tryAcquire({ resource, plan: { plan, epoch: 1 }, candidates, holderId: `racer-${i}` }, { timeoutMs: 20_000 });
              if (result.kind === "granted") leases.push(result.lease);
            }
            return leases;
          }),
        );
        const all = won.flat();
        assert.deepEqual(all.map((l) => l.partition).sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        const state = await t.backend.inspect(resource, CALL);
        for (const l of all) assert.equal(state.partitions[l.partition]!.holderId, l.holderId);
      } finally {
        await Promise.all(clients.map((c) => c.close()));
      }
    }, 60_000);

    test("a server restored from a snapshot (plan kept, leases reverted, new identity) grants nothing for the restore grace", async () => {
      if (!t.snapshot) {
        // Not a skip: the target must say why this kind of state loss cannot happen to it.
        assert.ok((t.restoreNotApplicable ?? "").length > 10, "a target without snapshot() must give restoreNotApplicable");
        return;
      }
      const restore = await t.snapshot();
      // Granted after the snapshot: the restored server forgets it, while its holder may still use it.
      const a = await lease([4], "holder-a");
      await restore();
      const started = Date.now();
      const result = await acquire([4], "holder-b");
      assert.equal(result.kind, "grace", `a restored server must not grant partition 4 at once: ${JSON.stringify(result)}`);
      // The forgotten leases may be of a plan newer than the restored one: the longest TTL and a window.
      const grace = backendEpochGraceMs(plan);
      const remaining = (result as { remainingMs: number }).remainingMs;
      assert.ok(remaining > grace - (Date.now() - started) - 1500 && remaining <= grace + 1000, `${remaining} of ${grace}`);
      assert.deepEqual(await t.backend.readPlan(resource, CALL), { plan, epoch: 1 });
      assert.equal(a.partition, 4);
    }, 120_000);
  });
}

function pick(s: { pool: string | null; holderId: string | null; epoch: number | null }) {
  return { pool: s.pool, holderId: s.holderId, epoch: s.epoch };
}

function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

function globalTestApi(): TestApi {
  const g = globalThis as unknown as Partial<TestApi> & { it?: TestApi["test"]; before?: TestApi["beforeAll"]; after?: TestApi["afterAll"] };
  const test = g.test ?? g.it;
  const beforeAll = g.beforeAll ?? g.before;
  const afterAll = g.afterAll ?? g.after;
  if (!g.describe || !test || !beforeAll || !afterAll || !g.beforeEach) {
    throw new Error("describeLeaseBackendConformance needs a test runner's describe/test/beforeAll/afterAll/beforeEach globals, or pass them as the `api` argument");
  }
  return { describe: g.describe, test, beforeAll, afterAll, beforeEach: g.beforeEach };
}
