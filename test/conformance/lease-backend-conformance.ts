import { randomUUID } from "node:crypto";
import type { LeaseBackend, Lease } from "../../src/contract/lease-backend.js";
import type { Plan } from "../../src/contract/plan.js";
import { PlanMismatchError } from "../../src/errors/plan-mismatch-error.js";
import { PlanMissingError } from "../../src/errors/plan-missing-error.js";
import { TimeoutError } from "../../src/errors/timeout-error.js";

/**
 * What a backend's runner hands the conformance suite. Real backends run against real servers on
 * real time; the memory backend runs on a VirtualClock.
 */
export interface ConformanceTarget {
  /** A backend connected to the server under test. */
  backend: LeaseBackend;
  /** Another, independent client of the same server (a separate connection), closed by the suite. */
  newClient(): Promise<LeaseBackend>;
  /** The lease TTL the suite uses; the shortest the backend supports is best. */
  ttlMs: number;
  /** A grace period the backend can express exactly (etcd: whole seconds; Azure: 15-60 s). */
  graceMs: number;
  /** Lets `ms` of time pass (virtual or real). */
  wait(ms: number): Promise<void>;
  /** Makes the server stop answering without closing connections; resolves to a resume function. */
  stall(): Promise<() => Promise<void>>;
}

const PLAN: Plan = { limit: 100, intervalMs: 1000, partitions: 10, pools: { ingest: 2 } };

/** Registers the conformance suite for one backend. `setup` runs once before the tests. */
export function describeLeaseBackendConformance(
  name: string,
  setup: () => Promise<ConformanceTarget>,
  teardown: () => Promise<void>,
): void {
  describe(`LeaseBackend conformance: ${name}`, () => {
    let t: ConformanceTarget;
    let resource: string;
    const newResource = async (graceMs = 0): Promise<string> => {
      const r = `conf-${randomUUID().slice(0, 8)}`;
      await t.backend.ensurePlan(r, PLAN, { graceMs, timeoutMs: 5000 });
      return r;
    };
    const acquire = (candidates: number[], holder = "holder-a", backend = t.backend): Promise<Lease | null> =>
      backend.tryAcquire(resource, candidates, holder, t.ttlMs, { timeoutMs: 5000 });

    beforeAll(async () => {
      t = await setup();
    });
    afterAll(async () => {
      await teardown();
    });
    beforeEach(async () => {
      resource = await newResource();
    });

    test("ensurePlan stores a plan once, verifies it after, and readPlan returns it", async () => {
      await t.backend.ensurePlan(resource, { ...PLAN, pools: { ingest: 2 } }, { graceMs: 0, timeoutMs: 5000 });
      expect(await t.backend.readPlan(resource, { timeoutMs: 5000 })).toEqual(PLAN);
      expect(await t.backend.readPlan(`${resource}-none`, { timeoutMs: 5000 })).toBeNull();
    });

    test("ensurePlan rejects a different plan with PlanMismatchError", async () => {
      const other = { ...PLAN, limit: 101 };
      await expect(t.backend.ensurePlan(resource, other, { graceMs: 0, timeoutMs: 5000 })).rejects.toBeInstanceOf(PlanMismatchError);
      const otherPools = { ...PLAN, pools: { ingest: 3 } };
      await expect(t.backend.ensurePlan(resource, otherPools, { graceMs: 0, timeoutMs: 5000 })).rejects.toBeInstanceOf(PlanMismatchError);
    });

    test("tryAcquire on a resource without a plan rejects with PlanMissingError", async () => {
      await expect(
        t.backend.tryAcquire(`${resource}-none`, [0], "holder-a", t.ttlMs, { timeoutMs: 5000 }),
      ).rejects.toBeInstanceOf(PlanMissingError);
    });

    test("a new plan grants nothing during its grace period, then grants", async () => {
      resource = await newResource(t.graceMs);
      expect(await acquire([0, 1, 2])).toBeNull();
      await t.wait(t.graceMs + 600);
      const lease = await acquire([0, 1, 2]);
      expect(lease?.partition).toBe(0);
    });

    test("tryAcquire takes the first free candidate in the given order; two holders never share", async () => {
      const a = await acquire([3, 1, 2], "holder-a");
      expect(a).toMatchObject({ resource, partition: 3, holderId: "holder-a" });
      expect(await acquire([3], "holder-b")).toBeNull();
      const b = await acquire([3, 1], "holder-b");
      expect(b?.partition).toBe(1);
      expect(b?.token).not.toBe(a?.token);
      // Out-of-range candidates are never granted.
      expect(await acquire([10, -1, 99], "holder-c")).toBeNull();
    });

    test("a lease frees itself after its TTL, and the old holder's renew reports it lost", async () => {
      const a = await acquire([0], "holder-a");
      expect(a).not.toBeNull();
      await t.wait(t.ttlMs + 700);
      const b = await acquire([0], "holder-b");
      expect(b?.partition).toBe(0);
      expect(await t.backend.renew(a!, t.ttlMs, { timeoutMs: 5000 })).toBe(false);
      // The old holder's release does not free the new holder's lease.
      await t.backend.release(a!, { timeoutMs: 5000 });
      expect(await acquire([0], "holder-c")).toBeNull();
    });

    test("renew extends only one's own lease", async () => {
      const a = await acquire([0], "holder-a");
      await t.wait(t.ttlMs * 0.6);
      expect(await t.backend.renew(a!, t.ttlMs, { timeoutMs: 5000 })).toBe(true);
      await t.wait(t.ttlMs * 0.6);
      // Past the original TTL, still held thanks to the renewal.
      expect(await acquire([0], "holder-b")).toBeNull();
      const forged: Lease = { ...a!, token: `${a!.token}-forged` };
      expect(await t.backend.renew(forged, t.ttlMs, { timeoutMs: 5000 })).toBe(false);
    });

    test("release removes only one's own lease", async () => {
      const a = await acquire([0], "holder-a");
      await t.backend.release({ ...a!, token: "not-the-token" }, { timeoutMs: 5000 });
      expect(await acquire([0], "holder-b")).toBeNull();
      await t.backend.release(a!, { timeoutMs: 5000 });
      expect(await t.backend.renew(a!, t.ttlMs, { timeoutMs: 5000 })).toBe(false);
      expect((await acquire([0], "holder-b"))?.partition).toBe(0);
      // Releasing twice is harmless.
      await t.backend.release(a!, { timeoutMs: 5000 });
    });

    test("fencing tokens, where offered, grow with every grant of a partition", async () => {
      const a = await acquire([0], "holder-a");
      await t.backend.release(a!, { timeoutMs: 5000 });
      const b = await acquire([0], "holder-b");
      if (a!.fencingToken === null) {
        expect(b!.fencingToken).toBeNull();
      } else {
        expect(b!.fencingToken).toBeGreaterThan(a!.fencingToken);
      }
    });

    test("inspect lists every partition with its pool, holder and time left", async () => {
      await acquire([0], "holder-a");
      await acquire([5], "holder-b");
      const states = await t.backend.inspect(resource, { timeoutMs: 5000 });
      expect(states).toHaveLength(PLAN.partitions);
      expect(states.map((s) => s.partition)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      expect(states[0]).toMatchObject({ pool: "ingest", holderId: "holder-a" });
      expect(states[1]).toMatchObject({ pool: "ingest", holderId: null, expiresInMs: null });
      expect(states[5]).toMatchObject({ pool: null, holderId: "holder-b" });
      expect(states[0]!.expiresInMs).toBeGreaterThan(0);
      expect(states[0]!.expiresInMs).toBeLessThanOrEqual(t.ttlMs);
      expect(await t.backend.inspect(`${resource}-none`, { timeoutMs: 5000 })).toEqual([]);
    });

    test("against a stalled server, calls fail by their timeout or abort and never hang", async () => {
      const lease = await acquire([0], "holder-a");
      const resume = await t.stall();
      try {
        const started = Date.now();
        const timeouts = [
          t.backend.tryAcquire(resource, [1], "holder-a", t.ttlMs, { timeoutMs: 300 }),
          t.backend.renew(lease!, t.ttlMs, { timeoutMs: 300 }),
          t.backend.release(lease!, { timeoutMs: 300 }),
          t.backend.inspect(resource, { timeoutMs: 300 }),
          t.backend.readPlan(resource, { timeoutMs: 300 }),
          t.backend.ensurePlan(resource, PLAN, { graceMs: 0, timeoutMs: 300 }),
        ].map((p) => p.then(() => "resolved", (e: unknown) => e));
        const outcome = Promise.all(timeouts);
        await t.wait(400);
        const results = await outcome;
        for (const r of results) expect(r).toBeInstanceOf(TimeoutError);
        // Real time: each failed within about its timeout (virtual time: trivially).
        expect(Date.now() - started).toBeLessThan(3000);

        const controller = new AbortController();
        const reason = new Error("caller gave up");
        const aborted = t.backend.tryAcquire(resource, [1], "holder-a", t.ttlMs, { signal: controller.signal });
        controller.abort(reason);
        await expect(aborted).rejects.toBe(reason);
        const pre = new AbortController();
        pre.abort(reason);
        await expect(t.backend.renew(lease!, t.ttlMs, { signal: pre.signal })).rejects.toBe(reason);
      } finally {
        await resume();
      }
      // Works again after the stall.
      expect(await t.backend.readPlan(resource, { timeoutMs: 5000 })).toEqual(PLAN);
    });

    test("20 clients racing over 10 partitions: each partition goes to at most one", async () => {
      const clients = await Promise.all(Array.from({ length: 20 }, () => t.newClient()));
      try {
        const won = await Promise.all(
          clients.map(async (client, i) => {
            const leases: Lease[] = [];
            for (let round = 0; round < 3; round++) {
              const candidates = shuffle([...Array(PLAN.partitions).keys()]);
              const lease = await client.tryAcquire(resource, candidates, `racer-${i}`, t.ttlMs * 3, { timeoutMs: 10_000 });
              if (lease) leases.push(lease);
            }
            return leases;
          }),
        );
        const all = won.flat();
        const partitions = all.map((l) => l.partition).sort((a, b) => a - b);
        expect(partitions).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        const states = await t.backend.inspect(resource, { timeoutMs: 5000 });
        for (const lease of all) expect(states[lease.partition]!.holderId).toBe(lease.holderId);
      } finally {
        await Promise.all(clients.map((c) => c.close()));
      }
    });
  });
}

function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}
