import type { Clock, TimerHandle } from "../../src/contract/clock.js";
import type { EnsurePlanOptions } from "../../src/contract/lease-backend.js";
import type { Plan } from "../../src/contract/plan.js";
import { validatePlan } from "../../src/contract/plan.js";
import { deletionGraceMs, minimumSafetyMarginMs, quietMs, sliceLengthMs, unknownHistoryGraceMs, windowSpanMs } from "../../src/contract/timing.js";
import { MemoryLeaseBackend } from "../../src/lease-backends/memory.js";
import { PartitionedRateLimiter } from "../../src/limiter/partitioned-rate-limiter.js";
import { VirtualClock } from "../../src/testing/virtual-clock.js";
import { auditSlidingWindows, type AuditEvent } from "../support/audit.js";

// The safety guards of the lease manager and the pace, one test each, on virtual time and fast
// enough for mutation testing (docs/mutation-testing.md lists the mutants each one kills). Each
// asserts the rule of docs/guarantee.md the guard implements, measured against the backend's own
// view (its expiry, its release time), not against the code's constants alone.

const PLAN = { resource: "guards", limit: 10, intervalMs: 1000, partitions: 1, leaseTtlMs: 3000 } as const;
/** The plan's timing as the limiter derives it (defaults: 10 slices, jitter 5 ms, drift 0.001). */
const TIMING = { ...PLAN, slicesPerInterval: 10, jitterMs: 5, driftFactor: 0.001 };
const MARGIN = minimumSafetyMarginMs(TIMING);

function setup() {
  const clock = new VirtualClock(1000);
  const backend = new MemoryLeaseBackend({ clock });
  return { clock, backend };
}

/** The backend's remaining TTL of partition 0 now, read without latency. */
async function backendExpiresInMs(backend: MemoryLeaseBackend): Promise<number> {
  const state = await backend.inspect(PLAN.resource, {});
  const ms = state.partitions[0]?.expiresInMs;
  if (ms === null || ms === undefined) throw new Error("partition 0 is not leased");
  return ms;
}

async function closeAll(clock: VirtualClock, ...limiters: PartitionedRateLimiter[]): Promise<void> {
  const closing = Promise.all(limiters.map((l) => l.close()));
  await clock.advance(5_000);
  await closing;
}

describe("H2: local deadlines end at least a margin before the backend's expiry", () => {
  test("an acquire whose reply comes late: the deadline runs from the send time, a margin short of the TTL", async () => {
    const { clock, backend } = setup();
    // The grant takes effect at once; its reply arrives 500 ms later.
    backend.setLatency(0, 500);
    const limiter = new PartitionedRateLimiter({ ...PLAN, backend, clock, minPartitions: 1 });
    let validForMs = NaN;
    let gap = NaN;
    limiter.on("acquired", (e) => {
      validForMs = e.validForMs;
      backend.setLatency(0, 0);
      void backendExpiresInMs(backend).then((expires) => (gap = expires - e.validForMs));
    });
    await clock.advance(1_000);
    // Sent at t, processed at t (expiry t + TTL), reply at t + 500: t + TTL − margin is 500 ms ahead less.
    expect(validForMs).toBe(PLAN.leaseTtlMs - MARGIN - 500);
    expect(gap).toBeGreaterThanOrEqual(MARGIN);
    await closeAll(clock, limiter);
  });

  test("a renewal whose reply comes late: the deadline runs from the send time, a margin before the backend's expiry", async () => {
    const { clock, backend } = setup();
    const limiter = new PartitionedRateLimiter({ ...PLAN, backend, clock, minPartitions: 1 });
    await clock.advance(100);
    expect(limiter.stats().heldPartitions).toBe(1);
    // The first renewal takes effect at once; its reply arrives 800 ms later (more than the margin).
    backend.setLatency(0, 800);
    const renewals: Array<{ validForMs: number; gap: number }> = [];
    limiter.on("renewed", (e) => {
      backend.setLatency(0, 0);
      void backendExpiresInMs(backend).then((expires) => renewals.push({ validForMs: e.validForMs, gap: expires - e.validForMs }));
    });
    await clock.advance(PLAN.leaseTtlMs / 3 + 900);
    expect(renewals.length).toBeGreaterThan(0);
    expect(renewals[0]!.validForMs).toBe(PLAN.leaseTtlMs - MARGIN - 800);
    for (const r of renewals) expect(r.gap).toBeGreaterThanOrEqual(MARGIN);
    await closeAll(clock, limiter);
  });

  test("a limiter whose renewals fail stops admitting at its deadline, a margin before the backend's expiry", async () => {
    const { clock, backend } = setup();
    const limiter = new PartitionedRateLimiter({ ...PLAN, backend, clock, minPartitions: 1 });
    await clock.advance(50);
    const acquiredAt = clock.now();
    const expiresAt = acquiredAt + (await backendExpiresInMs(backend));
    backend.failNext("heartbeat", 1_000);
    backend.failNext("tryAcquire", 1_000);
    const admitted: number[] = [];
    const loop = (async () => {
      for (;;) {
        try {
          await limiter.acquire(1, { timeoutMs: 10_000 });
        } catch {
          return;
        }
        admitted.push(clock.now());
      }
    })();
    await clock.advance(PLAN.leaseTtlMs + 1_000);
    expect(admitted.length).toBeGreaterThan(10);
    expect(Math.max(...admitted)).toBeLessThanOrEqual(expiresAt - MARGIN);
    await closeAll(clock, limiter);
    await loop;
  });
});

/** The limiter's view of a shared clock whose timers can be held back, as in a process stopped by SIGSTOP. */
class StoppableClock implements Clock {
  private held: Array<() => void> | null = null;
  constructor(private readonly base: VirtualClock) {}
  now(): number {
    return this.base.now();
  }
  setTimeout(fn: () => void, ms: number): TimerHandle {
    return this.base.setTimeout(() => (this.held ? this.held.push(fn) : fn()), ms);
  }
  clearTimeout(handle: TimerHandle): void {
    this.base.clearTimeout(handle);
  }
  stop(): void {
    this.held ??= [];
  }
  /** Resumes; the timers due meanwhile fire after whatever the caller does next synchronously. */
  resume(): void {
    const due = this.held ?? [];
    this.held = null;
    queueMicrotask(() => due.forEach((fn) => fn()));
  }
}

describe("every admission re-checks the deadline", () => {
  test("a process stopped past its deadline admits nothing when it resumes, before any timer of its fires", async () => {
    const { clock, backend } = setup();
    const own = new StoppableClock(clock);
    const limiter = new PartitionedRateLimiter({ ...PLAN, backend, clock: own, minPartitions: 1 });
    await clock.advance(50);
    expect(limiter.stats().heldPartitions).toBe(1);
    own.stop();
    await clock.advance(PLAN.leaseTtlMs + 500);
    own.resume();
    // The lease has expired on the backend (and may be someone else's): no admission on it.
    expect(limiter.tryAcquire(1)).toBe(false);
    await clock.advance(100);
    await closeAll(clock, limiter);
  });

  test("the deadline is strict: nothing is admitted at the deadline itself", async () => {
    const { clock, backend } = setup();
    const own = new StoppableClock(clock);
    const limiter = new PartitionedRateLimiter({ ...PLAN, backend, clock: own, minPartitions: 1 });
    let deadline = NaN;
    limiter.on("acquired", (e) => (deadline = clock.now() + e.validForMs));
    await clock.advance(50);
    own.stop();
    await clock.advanceTo(deadline);
    own.resume();
    expect(limiter.tryAcquire(1)).toBe(false);
    await clock.advance(100);
    await closeAll(clock, limiter);
  });
});

describe("replies that must not be used", () => {
  test("a grant whose reply comes after its would-be deadline is released at once, never used", async () => {
    const { clock, backend } = setup();
    // Processed at once, the reply comes TTL − margin + 100 ms later (a stop between the call and
    // its reply, outside any call timeout): its deadline has passed when it arrives.
    let slow = true;
    const wrapped: MemoryLeaseBackend = Object.create(backend, {
      tryAcquire: {
        value: async (...args: Parameters<MemoryLeaseBackend["tryAcquire"]>) => {
          const result = await backend.tryAcquire(...args);
          if (slow) await new Promise<void>((resolve) => clock.setTimeout(resolve, PLAN.leaseTtlMs - MARGIN + 100));
          return result;
        },
      },
    });
    const limiter = new PartitionedRateLimiter({ ...PLAN, backend: wrapped, clock, minPartitions: 1 });
    const acquired: number[] = [];
    limiter.on("acquired", (e) => acquired.push(e.validForMs));
    await clock.advance(PLAN.leaseTtlMs);
    slow = false;
    expect(acquired).toEqual([]);
    expect(backend.calls.release).toBe(1);
    await closeAll(clock, limiter);
  });

  test("a renewal the backend refuses under the same plan stops the partition at once", async () => {
    const { clock, backend } = setup();
    let refuse = false;
    const wrapped: MemoryLeaseBackend = Object.create(backend, {
      heartbeat: {
        value: async (...args: Parameters<MemoryLeaseBackend["heartbeat"]>) => {
          const result = await backend.heartbeat(...args);
          return refuse ? { ...result, renewed: result.renewed.map(() => false) } : result;
        },
      },
    });
    const limiter = new PartitionedRateLimiter({ ...PLAN, backend: wrapped, clock, minPartitions: 1 });
    const lost: string[] = [];
    limiter.on("lost", (e) => lost.push(e.reason));
    await clock.advance(50);
    expect(limiter.stats().heldPartitions).toBe(1);
    refuse = true;
    await clock.advance(PLAN.leaseTtlMs / 3 + 10);
    expect(lost[0]).toBe("renew-rejected");
    expect(limiter.stats().heldPartitions).toBe(0);
    expect(limiter.tryAcquire(1)).toBe(false);
    refuse = false;
    await closeAll(clock, limiter);
  });
});

describe("H1: a partition is given back only after a quiet slice", () => {
  test("close() releases a partition no earlier than quietMs after its last admission", async () => {
    const { clock, backend } = setup();
    const releases: number[] = [];
    const wrapped: MemoryLeaseBackend = Object.create(backend, {
      release: { value: (...args: Parameters<MemoryLeaseBackend["release"]>) => (releases.push(clock.now()), backend.release(...args)) },
    });
    const limiter = new PartitionedRateLimiter({ ...PLAN, backend: wrapped, clock, minPartitions: 1 });
    await clock.advance(50);
    await limiter.acquire(1);
    const lastAdmission = clock.now();
    await clock.advance(10);
    await closeAll(clock, limiter);
    expect(releases).toHaveLength(1);
    // (1e-9: the deadline and the difference are computed in floating point.)
    expect(releases[0]! - lastAdmission).toBeGreaterThanOrEqual(quietMs(TIMING) - 1e-9);
  });

  test("a surplus partition is released no earlier than quietMs after its last admission, and the next holder's first admission comes after that", async () => {
    const { clock, backend } = setup();
    const admissions: Array<{ t: number; who: string }> = [];
    const a = new PartitionedRateLimiter({ ...PLAN, backend, clock, holderId: "a" });
    const b = new PartitionedRateLimiter({ ...PLAN, backend, clock, holderId: "b" });
    const run = (l: PartitionedRateLimiter, who: string, untilMs: number) =>
      (async () => {
        while (clock.now() < untilMs) {
          try {
            await l.acquire(1, { timeoutMs: 30_000 });
          } catch {
            return;
          }
          admissions.push({ t: clock.now(), who });
        }
      })();
    // A saturates the one partition, then stops; B waits for it and gets it after A gives it back.
    const aRun = run(a, "a", clock.now() + 3_000);
    await clock.advance(500);
    const bRun = run(b, "b", clock.now() + 20_000);
    await clock.advance(20_000);
    await closeAll(clock, a, b);
    await Promise.all([aRun, bRun]);
    const lastA = Math.max(...admissions.filter((x) => x.who === "a").map((x) => x.t));
    const firstB = Math.min(...admissions.filter((x) => x.who === "b").map((x) => x.t));
    expect(Number.isFinite(firstB)).toBe(true);
    expect(firstB - lastA).toBeGreaterThanOrEqual(quietMs(TIMING) - 1e-9);
    expect(auditSlidingWindows(admissions.map((x) => ({ t: x.t, units: 1 })), PLAN.limit, PLAN.intervalMs).overLimitWindows).toBe(0);
  });
});

describe("P1: one holder's pace", () => {
  test("saturating one partition admits exactly the limit per window and one slice's share per slice", async () => {
    const { clock, backend } = setup();
    const limiter = new PartitionedRateLimiter({ ...PLAN, backend, clock, minPartitions: 1 });
    const admissions: AuditEvent[] = [];
    const loops = [0, 1].map(async () => {
      for (;;) {
        try {
          await limiter.acquire(1, { timeoutMs: 60_000 });
        } catch {
          return;
        }
        admissions.push({ t: clock.now(), units: 1 });
      }
    });
    await clock.advance(10_000);
    await closeAll(clock, limiter);
    await Promise.all(loops);
    const interval = auditSlidingWindows(admissions, PLAN.limit, windowSpanMs(TIMING));
    expect(interval.overLimitWindows).toBe(0);
    // Tight from below too: the pace is not slower than the plan (at least 9 of 10 per interval).
    expect(admissions.length).toBeGreaterThanOrEqual(9 * 9);
    // A slice holds at most one slice's share (1 unit): the burst a hand-over relies on (H1).
    const slice = auditSlidingWindows(admissions, 1, sliceLengthMs(TIMING));
    expect(slice.overLimitWindows).toBe(0);
  });
});

describe("P1 with bursts: the capped window binds", () => {
  test("two partitions of 50 with bursts of 5, saturated from a full bucket: never more than the limit in a window", async () => {
    const plan = { resource: "burst", limit: 100, intervalMs: 1000, partitions: 2, leaseTtlMs: 3000 } as const;
    const { clock, backend } = setup();
    const limiter = new PartitionedRateLimiter({ ...plan, backend, clock, minPartitions: 2 });
    await clock.advance(100);
    expect(limiter.stats().heldPartitions).toBe(2);
    const admissions: AuditEvent[] = [];
    const loops = [0, 1, 2, 3].map(async () => {
      for (;;) {
        try {
          await limiter.acquire(1, { timeoutMs: 60_000 });
        } catch {
          return;
        }
        admissions.push({ t: clock.now(), units: 1 });
      }
    });
    await clock.advance(5_000);
    await closeAll(clock, limiter);
    await Promise.all(loops);
    // A bucket alone would allow 10 at once plus 99 in the rest of the first window: the cap keeps 100.
    expect(auditSlidingWindows(admissions, plan.limit, plan.intervalMs).overLimitWindows).toBe(0);
    expect(admissions.length).toBeGreaterThanOrEqual(4 * 95);
  });
});

describe("P1 under on/off load: the capped window keeps what is still in it", () => {
  test("bursts after short pauses: the log's live entries still count, never more than the limit in a window", async () => {
    const plan = { resource: "onoff", limit: 100, intervalMs: 1000, partitions: 2, leaseTtlMs: 3000 } as const;
    const { clock, backend } = setup();
    const limiter = new PartitionedRateLimiter({ ...plan, backend, clock, minPartitions: 2 });
    await clock.advance(100);
    const admissions: AuditEvent[] = [];
    let on = true;
    let stopped = false;
    // On for 1100 ms, off for 200 ms: the buckets refill while the windows still hold most of the
    // last on-period, whose entries then expire during the next one (a full bucket plus the rate
    // over a window is 54 of 50 per partition: only the log keeps it at 50).
    const toggle = (): void => {
      if (stopped) return;
      on = !on;
      clock.setTimeout(toggle, on ? 1100 : 200);
    };
    clock.setTimeout(toggle, 1100);
    const loops = [0, 1, 2, 3].map(async () => {
      while (!stopped) {
        if (!on) {
          await new Promise<void>((r) => clock.setTimeout(r, 10));
          continue;
        }
        if (limiter.tryAcquire(1)) admissions.push({ t: clock.now(), units: 1 });
        else await new Promise<void>((r) => clock.setTimeout(r, 1));
      }
    });
    await clock.advance(8_000);
    stopped = true;
    await clock.advance(20);
    await Promise.all(loops);
    await closeAll(clock, limiter);
    expect(admissions.length).toBeGreaterThan(400);
    expect(auditSlidingWindows(admissions, plan.limit, plan.intervalMs).overLimitWindows).toBe(0);
  });
});

describe("G3: a limiter vouches for a lost history only right after a clean heartbeat", () => {
  type Down = { heartbeats: boolean };
  async function historiesAfterLoss(prepare: (clock: VirtualClock, backend: MemoryLeaseBackend, down: Down) => Promise<void>): Promise<string[]> {
    const { clock, backend } = setup();
    const histories: string[] = [];
    const down: Down = { heartbeats: false };
    const wrapped: MemoryLeaseBackend = Object.create(backend, {
      heartbeat: {
        value: async (...args: Parameters<MemoryLeaseBackend["heartbeat"]>) => {
          if (down.heartbeats) throw new Error("injected: heartbeat lost");
          return backend.heartbeat(...args);
        },
      },
      ensurePlan: {
        value: (resource: string, plan: Plan, opts: EnsurePlanOptions) => (histories.push(opts.history ?? "unknown"), backend.ensurePlan(resource, plan, opts)),
      },
    });
    const limiter = new PartitionedRateLimiter({ ...PLAN, backend: wrapped, clock, minPartitions: 1 });
    await clock.advance(100);
    expect(limiter.stats().heldPartitions).toBe(1);
    await prepare(clock, backend, down);
    histories.length = 0;
    backend.loseState();
    await clock.advance(PLAN.leaseTtlMs);
    await closeAll(clock, limiter);
    return histories;
  }

  test("a limiter that never ran under the plan stores it with history \"unknown\"", async () => {
    const { clock, backend } = setup();
    const histories: unknown[] = [];
    const wrapped: MemoryLeaseBackend = Object.create(backend, {
      ensurePlan: {
        value: (resource: string, plan: Plan, opts: EnsurePlanOptions) => (histories.push(opts.history), backend.ensurePlan(resource, plan, opts)),
      },
    });
    const limiter = new PartitionedRateLimiter({ ...PLAN, backend: wrapped, clock, minPartitions: 1 });
    await clock.advance(100);
    expect(histories).toEqual(["unknown"]);
    await closeAll(clock, limiter);
  });

  test("state lost right after a clean heartbeat: \"lost\"", async () => {
    const histories = await historiesAfterLoss(async (clock) => clock.advance(PLAN.leaseTtlMs / 3 + 10));
    expect(histories[0]).toBe("lost");
  });

  test("no heartbeat got through for longer than lostHistoryWindowMs: \"unknown\"", async () => {
    const histories = await historiesAfterLoss(async (clock, _backend, down) => {
      await clock.advance(PLAN.leaseTtlMs / 3 + 10);
      down.heartbeats = true;
      await clock.advance(PLAN.leaseTtlMs + PLAN.intervalMs + 500);
      down.heartbeats = false;
    });
    expect(histories.length).toBeGreaterThan(0);
    expect(new Set(histories)).toEqual(new Set(["unknown"]));
  });

  test("the last heartbeats saw a grace running (a backend epoch change): \"unknown\"", async () => {
    const histories = await historiesAfterLoss(async (clock, backend) => {
      backend.failover();
      // Heartbeats keep renewing under the backend-epoch grace (G2), which outlasts the window.
      await clock.advance(PLAN.leaseTtlMs * 3);
    });
    expect(histories.length).toBeGreaterThan(0);
    expect(new Set(histories)).toEqual(new Set(["unknown"]));
  });
});

describe("G1, G3: the memory backend's graces after it forgot", () => {
  const plan = validatePlan({ limit: 10, intervalMs: 1000, partitions: 1, leaseTtlMs: 3000 });
  const acquire = (backend: MemoryLeaseBackend, stored: Awaited<ReturnType<MemoryLeaseBackend["ensurePlan"]>>) =>
    backend.tryAcquire({ resource: "g", plan: stored, candidates: [0], holderId: "h" }, {});

  test.each([
    ["unknown", unknownHistoryGraceMs(plan)],
    ["lost", plan.leaseTtlMs],
  ] as const)("a plan stored again after a state loss with history %s grants nothing for %d ms", async (history, graceMs) => {
    const { clock, backend } = setup();
    const first = await backend.ensurePlan("g", plan, { history: "fresh" });
    expect((await acquire(backend, first)).kind).toBe("granted");
    await clock.advance(100);
    backend.loseState();
    const again = await backend.ensurePlan("g", plan, { history });
    expect(await acquire(backend, again)).toEqual({ kind: "grace", remainingMs: graceMs });
    await clock.advance(graceMs - 1);
    expect((await acquire(backend, again)).kind).toBe("grace");
    await clock.advance(1);
    expect((await acquire(backend, again)).kind).toBe("granted");
  });

  test("a plan deleted and stored again grants nothing for the deletion grace", async () => {
    const { clock, backend } = setup();
    await backend.ensurePlan("g", plan, { history: "fresh" });
    await clock.advance(10);
    expect(await backend.deletePlan("g", {})).toBe(true);
    const again = await backend.ensurePlan("g", plan, { history: "fresh" });
    const result = await acquire(backend, again);
    expect(result.kind).toBe("grace");
    expect(result.kind === "grace" && result.remainingMs).toBeGreaterThanOrEqual(deletionGraceMs(plan));
  });
});
