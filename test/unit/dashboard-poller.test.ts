import { validatePlan, type StoredPlan } from "../../src/contract/plan.js";
import { ResourcePoller, type DashboardUpdate } from "../../src/dashboard/resource-poller.js";
import { MemoryLeaseBackend } from "../../src/lease-backends/memory.js";
import { VirtualClock } from "../../src/testing/virtual-clock.js";

const RESOURCE = "orders-db";
const plan = validatePlan({ limit: 40, intervalMs: 1000, partitions: 4, pools: { ingest: 1 }, leaseTtlMs: 3000 });

async function setUp(options: { keepChanges?: number } = {}) {
  const clock = new VirtualClock(1000);
  const backend = new MemoryLeaseBackend({ clock });
  const stored = await backend.ensurePlan(RESOURCE, plan, { history: "fresh" });
  const errors: unknown[] = [];
  let recovered = 0;
  const poller = new ResourcePoller({
    backend,
    resource: RESOURCE,
    intervalMs: 500,
    timeoutMs: 2000,
    clock,
    wallClock: () => 1_700_000_000_000 + clock.now(),
    onError: (e) => errors.push(e),
    onRecovered: () => recovered++,
    ...options,
  });
  return { clock, backend, stored, poller, errors, recovered: () => recovered };
}

async function take(backend: MemoryLeaseBackend, stored: StoredPlan, partition: number, holderId: string) {
  const result = await backend.tryAcquire({ resource: RESOURCE, plan: stored, candidates: [partition], holderId }, {});
  if (result.kind !== "granted") throw new Error(`partition ${partition} not granted: ${result.kind}`);
  await backend.heartbeat({ resource: RESOURCE, plan: stored, holder: { holderId, pool: null, wants: 2, weight: 1, reserve: 0, held: [partition], demand: 5, rate: 4 }, leases: [result.lease] }, {});
  return result.lease;
}

describe("ResourcePoller: one reader for every page", () => {
  test("reads once per interval however many subscribe, and every subscriber gets every reading", async () => {
    const { clock, backend, poller } = await setUp();
    const received = Array.from({ length: 5 }, () => [] as DashboardUpdate[]);
    received.forEach((list) => poller.subscribe((u) => list.push(u)));
    poller.start();
    poller.start();
    await clock.advance(5000);
    // At 0, 500, …, 5000 ms.
    expect(backend.calls.inspect).toBe(11);
    expect(poller.readings).toBe(11);
    for (const list of received) expect(list).toHaveLength(11);
    expect(new Set(received.map((list) => list[10]))).toEqual(new Set([poller.latest()]));
    await poller.close();
  });

  test("a reading slower than the interval delays the next one: never two at once", async () => {
    const { clock, backend, poller } = await setUp();
    backend.setLatency(400, 300);
    const inspect = backend.inspect.bind(backend);
    let inFlight = 0;
    let most = 0;
    backend.inspect = async (...args) => {
      most = Math.max(most, ++inFlight);
      try {
        return await inspect(...args);
      } finally {
        inFlight--;
      }
    };
    poller.start();
    await clock.advance(3500);
    // Started at 0, 700, 1400, 2100, 2800 and 3500 ms.
    expect(backend.calls.inspect).toBe(6);
    expect(most).toBe(1);
    await poller.close();
  });

  test("the snapshot has the plan, pools, holders with fair shares, and no fencing tokens", async () => {
    const { clock, backend, stored, poller } = await setUp();
    await take(backend, stored, 2, "a");
    poller.start();
    const { snapshot } = await poller.first();
    expect(snapshot).toMatchObject({ resource: RESOURCE, backend: "memory", readAt: 1_700_000_001_000, plan, epoch: 1, graceMs: 0, error: null });
    expect(snapshot.partitions.map((p) => [p.pool, p.holderId])).toEqual([["ingest", null], [null, null], [null, "a"], [null, null]]);
    expect(snapshot.partitions[2]!.expiresInMs).toBe(3000);
    expect(snapshot.holders).toEqual([expect.objectContaining({ holderId: "a", wants: 2, held: [2], rate: 4, fairShare: 2 })]);
    expect(JSON.stringify(snapshot)).not.toMatch(/token/i);
    await clock.advance(0);
    await poller.close();
  });

  test("logs what changed between readings, numbered, with the reading's time", async () => {
    const { clock, backend, stored, poller } = await setUp();
    poller.start();
    await clock.advance(0);
    await take(backend, stored, 1, "a");
    await clock.advance(500);
    expect(poller.latest()!.changes).toEqual([
      { seq: 1, at: 1_700_000_001_500, change: { kind: "holder-joined", holderId: "a" } },
      { seq: 2, at: 1_700_000_001_500, change: { kind: "taken", partition: 1, holderId: "a" } },
    ]);
    // The lease and the record expire (TTL 3 s) without renewal.
    await clock.advance(3000);
    expect(poller.latest()!.changes.slice(2).map((e) => e.change)).toEqual([
      { kind: "freed", partition: 1, holderId: "a" },
      { kind: "holder-left", holderId: "a" },
    ]);
    await poller.close();
  });

  test("keeps only the last keepChanges changes", async () => {
    const { clock, backend, stored, poller } = await setUp({ keepChanges: 3 });
    poller.start();
    await clock.advance(0);
    await take(backend, stored, 0, "a");
    await take(backend, stored, 1, "b");
    await clock.advance(500);
    expect(poller.latest()!.changes.map((e) => e.seq)).toEqual([2, 3, 4]);
    await poller.close();
  });

  test("a failing backend: the last good reading with a short reason, one log entry per outage, and the recovery", async () => {
    const { clock, backend, stored, poller, errors, recovered } = await setUp();
    await take(backend, stored, 0, "a");
    poller.start();
    await clock.advance(0);
    backend.failNext("inspect", 2);
    await clock.advance(1000);
    const failing = poller.latest()!;
    expect(failing.snapshot.error).toBe("injected failure");
    expect(failing.snapshot.partitions[0]!.holderId).toBe("a");
    expect(failing.changes.map((e) => e.change)).toEqual([{ kind: "backend-failing", reason: "injected failure" }]);
    expect(errors).toHaveLength(1);
    await clock.advance(500);
    expect(poller.latest()!.snapshot.error).toBeNull();
    expect(poller.latest()!.changes.map((e) => e.change.kind)).toEqual(["backend-failing", "backend-back"]);
    expect(recovered()).toBe(1);
    await poller.close();
  });

  test("a backend failing from the start shows no plan and the reason", async () => {
    const { clock, backend, poller } = await setUp();
    backend.failNext("inspect", 1);
    poller.start();
    await clock.advance(0);
    expect(poller.latest()!.snapshot).toMatchObject({ plan: null, epoch: null, partitions: [], holders: [], error: "injected failure" });
    await poller.close();
  });

  test("close() aborts a hanging reading, leaves no timer, and reads no more", async () => {
    const { clock, backend, poller } = await setUp();
    poller.start();
    await clock.advance(500);
    expect(backend.calls.inspect).toBe(2);
    const resume = backend.stall();
    await clock.advance(500);
    expect(backend.calls.inspect).toBe(3);
    await poller.close();
    resume();
    expect(clock.pendingTimers).toBe(0);
    await clock.advance(5000);
    expect(backend.calls.inspect).toBe(3);
    await expect(new ResourcePoller({ backend, resource: RESOURCE, intervalMs: 500, timeoutMs: 100, clock }).close()).resolves.toBeUndefined();
  });

  test("first() rejects when the poller closes before its first reading", async () => {
    const { poller } = await setUp();
    const first = poller.first();
    await poller.close();
    await expect(first).rejects.toThrow("closed before its first reading");
  });
});
