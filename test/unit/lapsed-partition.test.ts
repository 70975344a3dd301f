import type { CallOptions, HeartbeatRequest, HeartbeatResult, LeaseBackend } from "../../src/contract/lease-backend.js";
import { MemoryLeaseBackend } from "../../src/lease-backends/memory.js";
import { PartitionedRateLimiter } from "../../src/limiter/partitioned-rate-limiter.js";
import { VirtualClock } from "../../src/testing/virtual-clock.js";
import { auditSlidingWindows, type AuditEvent } from "../support/audit.js";

// A partition whose local deadline passed while its renewals failed (a network partition, an etcd
// leader election) stops admitting. If a later renewal finds the lease still this grant, it may be
// used again, but only while the backend reports no grace: a backend that revives leases on a
// restore (etcd brings every lease of a snapshot back with its full TTL) can renew a grant that
// had expired and been granted to someone else since the snapshot, whose holder still admits on it
// until its own deadline (docs/guarantee.md, G2: during the grace only leases that never lapsed
// are safe to keep using).

const PLAN = { limit: 100, intervalMs: 1000, partitions: 1, leaseTtlMs: 3000, slicesPerInterval: 2 } as const;

/** A view of `backend` through a link that can be cut: calls then fail at once, as to an unreachable server. */
function cuttable(backend: LeaseBackend): { backend: LeaseBackend; cut(): void; heal(): void } {
  let down = false;
  const guard = <A extends unknown[], R>(f: (...args: A) => Promise<R>) => (...args: A): Promise<R> =>
    down ? Promise.reject(new Error("link cut")) : f(...args);
  const view: LeaseBackend = {
    name: backend.name,
    leaseTtlRule: backend.leaseTtlRule,
    ensurePlan: guard(backend.ensurePlan.bind(backend)),
    readPlan: guard(backend.readPlan.bind(backend)),
    replacePlan: guard(backend.replacePlan.bind(backend)),
    deletePlan: guard(backend.deletePlan.bind(backend)),
    tryAcquire: guard(backend.tryAcquire.bind(backend)),
    heartbeat: guard((request: HeartbeatRequest, opts: CallOptions): Promise<HeartbeatResult> => backend.heartbeat(request, opts)),
    release: guard(backend.release.bind(backend)),
    inspect: guard(backend.inspect.bind(backend)),
    close: () => Promise.resolve(),
  };
  return { backend: view, cut: () => (down = true), heal: () => (down = false) };
}

test("a lapsed partition renewed during a restore grace (etcd-style revived lease) is not used again while the grant that replaced it may still admit: 0 windows over", async () => {
  const clock = new VirtualClock(1_000);
  const backend = new MemoryLeaseBackend({ clock });
  const link = cuttable(backend);
  const events: AuditEvent[] = [];
  const make = (id: string, via: LeaseBackend) =>
    new PartitionedRateLimiter({ resource: "r", ...PLAN, backend: via, clock, holderId: id, minPartitions: 1, maxPartitions: 1 });
  const a = make("a", link.backend);
  await clock.advance(50);
  expect(a.stats().heldPartitions).toBe(1);
  const snapshot = backend.snapshot(); // taken while a holds the partition
  const admittedBy = { a: 0, b: 0 };
  // Both saturate: every 10 ms each tries to admit one unit.
  const tick = async (until: number) => {
    while (clock.now() < until) {
      for (const [name, limiter] of [["a", a], ["b", b]] as const) {
        if (limiter && limiter.tryAcquire(1)) {
          events.push({ t: clock.now(), units: 1 });
          admittedBy[name]++;
        }
      }
      await clock.advance(10);
    }
  };
  let b: PartitionedRateLimiter | null = null;
  await tick(clock.now() + 500);
  link.cut(); // a's renewals fail from now on; its lease expires on the backend 3 s after its last renewal
  b = make("b", backend);
  await tick(clock.now() + 5_000);
  expect(b.stats().heldPartitions).toBe(1); // b took the partition once a's lease expired
  const bBefore = admittedBy.b;
  expect(bBefore).toBeGreaterThan(0);
  // The backend is restored from the snapshot, reviving a's grant with a full TTL and forgetting b's.
  backend.restore(snapshot, { reviveLeases: true });
  link.heal();
  const aBefore = admittedBy.a;
  await tick(clock.now() + 6_000);
  const audit = auditSlidingWindows(events, PLAN.limit, PLAN.intervalMs);
  expect({ overLimitWindows: audit.overLimitWindows, worstRatio: audit.worstRatio <= 1 }).toEqual({ overLimitWindows: 0, worstRatio: true });
  // a admitted nothing in the 6 s after the restore: the grace was still running.
  expect(admittedBy.a - aBefore).toBe(0);
  for (const limiter of [a, b]) {
    const closing = limiter.close();
    await clock.advance(2_000);
    await closing;
  }
});

test("a lapsed partition whose lease was still alive when the backend revived leases is used again during the grace: a renewal proves it never expired", async () => {
  const clock = new VirtualClock(1_000);
  const backend = new MemoryLeaseBackend({ clock });
  const link = cuttable(backend);
  const a = new PartitionedRateLimiter({ resource: "r", ...PLAN, backend: link.backend, clock, holderId: "a", minPartitions: 1, maxPartitions: 1 });
  await clock.advance(50);
  expect(a.stats().heldPartitions).toBe(1);
  const lost: string[] = [];
  a.on("lost", (e) => lost.push(e.reason));
  link.cut();
  await clock.advance(500);
  // Revived (as on an etcd leader change) while the lease is certainly alive: it expires 3 s after its last renewal.
  backend.restore(backend.snapshot(), { reviveLeases: true });
  await clock.advance(2_700); // past a's local deadline: it lapses
  expect(lost).toEqual(["expired"]);
  expect(a.tryAcquire(1)).toBe(false);
  link.heal();
  const healedAt = clock.now();
  let admitted = 0;
  while (clock.now() < healedAt + 3_000) {
    if (a.tryAcquire(1)) admitted++;
    await clock.advance(10);
  }
  // The restore grace (about 61 s) still runs, yet the partition is back: no new grant was needed.
  expect((await backend.inspect("r", {})).graceMs).toBeGreaterThan(50_000);
  expect(admitted).toBeGreaterThan(0);
  expect(a.stats().heldPartitions).toBe(1);
  const closing = a.close();
  await clock.advance(2_000);
  await closing;
});
