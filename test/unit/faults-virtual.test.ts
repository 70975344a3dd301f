import type { Clock, TimerHandle } from "../../src/contract/clock.js";
import { MemoryLeaseBackend } from "../../src/lease-backends/memory.js";
import { PartitionedRateLimiter } from "../../src/limiter/partitioned-rate-limiter.js";
import { VirtualClock } from "../../src/testing/virtual-clock.js";
import { auditSlidingWindows, type AuditEvent, type AuditResult } from "../support/audit.js";

// The fault matrix on virtual time: several limiters ("processes") share one MemoryLeaseBackend
// and one VirtualClock; each fault is injected at a known time and the exact auditor checks every
// sliding window of every admission. Deterministic apart from the limiter's own random candidate
// order and backoff jitter, which the assertions do not depend on.

const LIMIT = 100;
const INTERVAL = 1000;
const PARTITIONS = 10;
const TTL = 3000;

/**
 * A process's view of the shared clock: it can be paused (timers due meanwhile fire at resume, as
 * after SIGSTOP) or crashed (nothing it scheduled runs again, as after SIGKILL). It also stops a
 * process whose timers spin at one instant, which on virtual time would hang the test instead of
 * failing it.
 */
class FaultClock implements Clock {
  private deferred: Array<() => void> | null = null;
  private crashed = false;
  spinAt: number | null = null;
  private sameInstant = 0;
  private lastAt = -1;
  timersSet = 0;

  constructor(private readonly base: VirtualClock) {}

  now(): number {
    return this.base.now();
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    this.timersSet++;
    const at = this.base.now() + Math.max(0, ms);
    this.sameInstant = at === this.lastAt ? this.sameInstant + 1 : 0;
    this.lastAt = at;
    if (this.sameInstant > 1000) {
      this.spinAt ??= at;
      this.crashed = true;
    }
    const handle = { underlying: undefined as TimerHandle, cancelled: false };
    handle.underlying = this.base.setTimeout(() => {
      if (handle.cancelled || this.crashed) return;
      if (this.deferred) this.deferred.push(() => !handle.cancelled && fn());
      else fn();
    }, ms);
    return handle;
  }

  clearTimeout(handle: TimerHandle): void {
    const h = handle as { underlying: TimerHandle; cancelled: boolean } | undefined;
    if (!h) return;
    h.cancelled = true;
    this.base.clearTimeout(h.underlying);
  }

  pause(): void {
    this.deferred ??= [];
  }

  resume(): void {
    const due = this.deferred ?? [];
    this.deferred = null;
    for (const fn of due) fn();
  }

  crash(): void {
    this.crashed = true;
    this.deferred = null;
  }

  get isDown(): boolean {
    return this.crashed || this.deferred !== null;
  }
}

interface Admission extends AuditEvent {
  proc: number;
}

interface Proc {
  clock: FaultClock;
  limiter: PartitionedRateLimiter;
  acquiredAt: number[];
}

interface Sim {
  base: VirtualClock;
  backend: MemoryLeaseBackend;
  procs: Proc[];
  admissions: Admission[];
  /** Samples of the partitions held by live processes, every 100 ms: [time, held]. */
  held: Array<[number, number]>;
  /** Runs until virtual time `t`, sampling. */
  runTo(t: number): Promise<void>;
  /** Stops the workload and closes every live limiter; returns the audit. */
  finish(): Promise<AuditResult>;
}

async function simulate(processes: number, options: { concurrency?: number } = {}): Promise<Sim> {
  const base = new VirtualClock(0);
  const backend = new MemoryLeaseBackend({ clock: base });
  const admissions: Admission[] = [];
  const held: Array<[number, number]> = [];
  let stopped = false;
  const procs: Proc[] = [];
  for (let i = 0; i < processes; i++) {
    const clock = new FaultClock(base);
    const limiter = new PartitionedRateLimiter({
      resource: "faults", limit: LIMIT, intervalMs: INTERVAL, partitions: PARTITIONS, backend, clock, leaseTtlMs: TTL, holderId: `p${i}`,
    });
    const proc: Proc = { clock, limiter, acquiredAt: [] };
    limiter.on("acquired", () => proc.acquiredAt.push(base.now()));
    procs.push(proc);
    // Saturating callers: every loop asks again as soon as it is admitted.
    for (let c = 0; c < (options.concurrency ?? 8); c++) {
      void (async () => {
        while (!stopped) {
          try {
            await limiter.acquire(1);
          } catch {
            return;
          }
          if (stopped) return;
          admissions.push({ t: base.now(), units: 1, proc: i });
        }
      })();
    }
  }
  const sim: Sim = {
    base, backend, procs, admissions, held,
    async runTo(t) {
      while (base.now() < t) {
        await base.advance(Math.min(100, t - base.now()));
        held.push([base.now(), procs.filter((p) => !p.clock.isDown).reduce((s, p) => s + p.limiter.stats().heldPartitions, 0)]);
      }
    },
    async finish() {
      stopped = true;
      const closing = procs.filter((p) => !p.clock.isDown).map((p) => p.limiter.close());
      await base.advance(5000);
      await Promise.all(closing);
      for (const [i, p] of procs.entries()) expect({ proc: i, spinAt: p.clock.spinAt }).toEqual({ proc: i, spinAt: null });
      return auditSlidingWindows(admissions, LIMIT, INTERVAL);
    },
  };
  return sim;
}

/** First sample after `from` at which live processes hold every partition again. */
function recoveredAt(sim: Sim, from: number): number {
  const hit = sim.held.find(([t, n]) => t > from && n === PARTITIONS);
  return hit ? hit[0] : Infinity;
}

/** When every partition is held again after the holdings first dropped (after `from`). */
function recoveredAfterDrop(sim: Sim, from: number): { droppedAt: number; recoveredAt: number } {
  const drop = sim.held.find(([t, n]) => t > from && n < PARTITIONS);
  if (!drop) return { droppedAt: Infinity, recoveredAt: Infinity };
  return { droppedAt: drop[0], recoveredAt: recoveredAt(sim, drop[0]) };
}

/** Units admitted in [from, to). */
function unitsIn(sim: Sim, from: number, to: number, proc?: number): number {
  return sim.admissions.filter((a) => a.t >= from && a.t < to && (proc === undefined || a.proc === proc)).length;
}

/** Figures for the report: one line per fault row. */
const rows: string[] = [];
afterAll(() => {
  if (rows.length) console.log(`virtual-time fault matrix (limit ${LIMIT}/${INTERVAL} ms, ${PARTITIONS} partitions, ttl ${TTL} ms):\n${rows.join("\n")}`);
});
function row(name: string, audit: AuditResult, recoveryMs: number | null): void {
  rows.push(`${name}: over-limit windows ${audit.overLimitWindows}, worst ratio ${audit.worstRatio.toFixed(3)}, units ${audit.totalUnits}, recovery ${recoveryMs === null ? "-" : `${Math.round(recoveryMs)} ms`}`);
}

test("baseline: three saturating processes use the whole quota and never exceed it", async () => {
  const sim = await simulate(3);
  await sim.runTo(20_000);
  const audit = await sim.finish();
  expect(audit.overLimitWindows).toBe(0);
  // After the plan's grace (ttl) and ramp-up, ~100/s for the rest.
  expect(unitsIn(sim, 6000, 20_000)).toBeGreaterThan(0.95 * LIMIT * 14);
  row("baseline", audit, null);
});

test("crash: a process stops without close; its partitions are reused within ttl + margin + one acquisition cycle", async () => {
  const sim = await simulate(3);
  await sim.runTo(8000);
  // No fairness is promised: crash the process holding the most partitions.
  const victim = mostHeld(sim.procs);
  expect(victim.limiter.stats().heldPartitions).toBeGreaterThan(0);
  victim.clock.crash();
  const crashAt = sim.base.now();
  await sim.runTo(20_000);
  const audit = await sim.finish();
  expect(audit.overLimitWindows).toBe(0);
  const recovery = recoveredAt(sim, crashAt) - crashAt;
  // The server frees them ttl after the victim's last renewal (at most ttl after the crash); the
  // survivors' next attempt comes within their backoff ceiling (ttl / 4, at most 1 s).
  expect(recovery).toBeLessThanOrEqual(TTL + 1000);
  expect(unitsIn(sim, crashAt + TTL + 1000, 20_000)).toBeGreaterThan(0.95 * LIMIT * ((20_000 - crashAt - TTL - 1000) / 1000));
  row("crash (no close)", audit, recovery);
});

test("pause longer than the TTL: the paused process admits nothing on expired leases, then rejoins", async () => {
  const sim = await simulate(3);
  await sim.runTo(8000);
  const paused = mostHeld(sim.procs);
  const pausedIndex = sim.procs.indexOf(paused);
  expect(paused.limiter.stats().heldPartitions).toBeGreaterThan(0);
  paused.clock.pause();
  const pausedAt = sim.base.now();
  await sim.runTo(pausedAt + 2.5 * TTL);
  const resumedAt = sim.base.now();
  const acquiredBefore = paused.acquiredAt.length;
  paused.clock.resume();
  await sim.runTo(resumedAt + 5000);
  // The others are saturated and keep every partition (no fairness is promised); once they close,
  // the resumed process takes the quota.
  const othersClosing = sim.procs.filter((p) => p !== paused).map((p) => p.limiter.close());
  const othersClosedAt = sim.base.now();
  await sim.runTo(othersClosedAt + 5000);
  await Promise.all(othersClosing);
  const audit = await sim.finish();
  expect(audit.overLimitWindows).toBe(0);
  // Between the pause and its first new lease, the paused process admitted nothing at all.
  const firstNewLease = paused.acquiredAt[acquiredBefore] ?? Infinity;
  expect(firstNewLease).toBeGreaterThan(resumedAt - 1);
  expect(unitsIn(sim, pausedAt, firstNewLease, pausedIndex)).toBe(0);
  // It rejoined: it took leases within a slice and a backoff of the others' release, and admitted.
  expect(firstNewLease).toBeLessThanOrEqual(othersClosedAt + 1500);
  expect(unitsIn(sim, firstNewLease, othersClosedAt + 5000, pausedIndex)).toBeGreaterThan(0.9 * LIMIT * 3);
  row("pause > ttl", audit, recoveredAt(sim, pausedAt) - pausedAt);
});

test("backend state loss: renewals are refused, nobody is granted anything during the grace, then all recover", async () => {
  const sim = await simulate(3);
  await sim.runTo(8000);
  sim.backend.loseState();
  const lostAt = sim.base.now();
  await sim.runTo(22_000);
  const audit = await sim.finish();
  expect(audit.overLimitWindows).toBe(0);
  const { droppedAt, recoveredAt: back } = recoveredAfterDrop(sim, lostAt);
  const recovery = back - lostAt;
  // Renewals fail within ttl / 3; the holders re-create the plan vouching for its TTL (their last
  // clean heartbeat is less than a TTL old), which grants nothing for one TTL; then a retry.
  expect(droppedAt - lostAt).toBeLessThanOrEqual(TTL / 3 + 200);
  expect(back - droppedAt).toBeGreaterThanOrEqual(TTL - 200);
  expect(recovery).toBeLessThanOrEqual(TTL / 3 + TTL + 1500);
  expect(sim.procs.reduce((s, p) => s + p.limiter.stats().leasesLost, 0)).toBeGreaterThan(0);
  row("backend state loss", audit, recovery);
});

test("stalled backend (longer than the TTL): holders stop by their local deadlines, no hang, no spin, then recover", async () => {
  const sim = await simulate(3);
  await sim.runTo(8000);
  const resume = sim.backend.stall();
  const stalledAt = sim.base.now();
  await sim.runTo(stalledAt + 2 * TTL);
  // Every lease's local deadline is at most ttl − margin after its last successful renewal,
  // which was sent before the stall.
  expect(unitsIn(sim, stalledAt + TTL, sim.base.now())).toBe(0);
  expect(sim.held.at(-1)![1]).toBe(0);
  resume();
  const resumedAt = sim.base.now();
  await sim.runTo(resumedAt + 8000);
  const audit = await sim.finish();
  expect(audit.overLimitWindows).toBe(0);
  const recovery = recoveredAt(sim, resumedAt) - resumedAt;
  expect(recovery).toBeLessThanOrEqual(TTL + 1500);
  row("stalled backend 2 x ttl", audit, recovery);
});

test("failed renewals do not make the lease manager spin timers until its retry", async () => {
  const sim = await simulate(1);
  await sim.runTo(6000);
  expect(sim.procs[0]!.limiter.stats().heldPartitions).toBe(PARTITIONS);
  sim.backend.failNext("heartbeat", 1000);
  const before = sim.procs[0]!.clock.timersSet;
  await sim.runTo(6000 + TTL);
  // Without load the limiter sets a few timers per renewal attempt and slice; a spin sets
  // thousands at one instant (and FaultClock stops the process).
  expect(sim.procs[0]!.clock.spinAt).toBeNull();
  expect(sim.procs[0]!.clock.timersSet - before).toBeLessThan(2000);
  const audit = await sim.finish();
  expect(audit.overLimitWindows).toBe(0);
});

test("slow backend (latency 800 ms of a 3000 ms TTL): no over-admission, capacity kept", async () => {
  const sim = await simulate(3);
  await sim.runTo(8000);
  sim.backend.setLatency(400, 400);
  const slowAt = sim.base.now();
  await sim.runTo(25_000);
  const audit = await sim.finish();
  expect(audit.overLimitWindows).toBe(0);
  // Renewals still arrive in time, so the quota stays in use (deadlines are shorter by the latency).
  expect(unitsIn(sim, slowAt, 25_000)).toBeGreaterThan(0.9 * LIMIT * ((25_000 - slowAt) / 1000));
  row("slow backend (400+400 ms)", audit, null);
});

test("lost renew replies: the renewal took effect but the reply never came; 0 windows over", async () => {
  const sim = await simulate(3);
  await sim.runTo(8000);
  for (let i = 0; i < 6; i++) {
    sim.backend.dropNextReplies(4);
    await sim.runTo(sim.base.now() + TTL / 2);
  }
  await sim.runTo(sim.base.now() + 8000);
  const end = sim.base.now();
  const audit = await sim.finish();
  expect(audit.overLimitWindows).toBe(0);
  expect(recoveredAt(sim, end - 3000)).toBeLessThan(Infinity);
  row("lost replies (24)", audit, null);
});

test("wall-clock jumps of ±1 h change nothing: Date.now never decides an admission", async () => {
  const realNow = Date.now;
  const sim = await simulate(3);
  try {
    await sim.runTo(6000);
    let offset = 0;
    for (let i = 0; i < 8; i++) {
      offset = i % 2 === 0 ? 3_600_000 : -3_600_000;
      const shift = offset;
      Date.now = () => realNow() + shift;
      await sim.runTo(sim.base.now() + 1500);
    }
  } finally {
    Date.now = realNow;
  }
  const audit = await sim.finish();
  expect(audit.overLimitWindows).toBe(0);
  expect(unitsIn(sim, 6000, 18_000)).toBeGreaterThan(0.95 * LIMIT * 12);
  row("wall clock ±1 h", audit, null);
});

/** The process holding the most partitions (the one whose fault matters most). */
function mostHeld<P extends { limiter: { stats(): { heldPartitions: number } } }>(procs: readonly P[]): P {
  return [...procs].sort((a, b) => b.limiter.stats().heldPartitions - a.limiter.stats().heldPartitions)[0]!;
}
