import { PartitionedRateLimiter } from "../../src/limiter/partitioned-rate-limiter.js";
import { MemoryLeaseBackend } from "../../src/lease-backends/memory.js";
import { VirtualClock } from "../../src/testing/virtual-clock.js";
import { ProcessClock } from "./process-clock.js";
import { auditSlidingWindows, type AuditEvent, type AuditResult } from "./audit.js";

/** A fault injected at virtual time `at` (ms). */
export type SimFault =
  | { at: number; kind: "pause"; target: number; durationMs: number }
  | { at: number; kind: "crash"; target: number; restartAfterMs: number }
  | { at: number; kind: "restart"; target: number }
  | { at: number; kind: "renew-fail"; count: number }
  | { at: number; kind: "state-loss" }
  | { at: number; kind: "stall"; durationMs: number }
  | { at: number; kind: "drop-replies"; count: number }
  | { at: number; kind: "latency"; requestMs: number; replyMs: number; durationMs: number };

/** A simulated deployment: processes sharing one quota on one MemoryLeaseBackend, on virtual time. */
export interface SimConfig {
  limit: number;
  intervalMs: number;
  partitions: number;
  processes: number;
  leaseTtlMs: number;
  slicesPerInterval: number;
  durationMs: number;
  /** Costs to draw from, multiples of 0.001. */
  costs: number[];
  /** Concurrent acquire loops per process. */
  concurrency: number;
  /** Clock-rate error per process, |drift| < driftFactor (0.001). */
  drift: number[];
  faults: SimFault[];
  /** Pre-create the plan without grace (a known-fresh backend). */
  precreatePlan: boolean;
  seed: number;
}

/** What a simulation produced. */
export interface SimResult {
  admissions: AuditEvent[];
  audit: AuditResult;
  /** Timers left on the shared clock after every live limiter closed. */
  leftoverTimers: number;
}

/** A small deterministic PRNG (mulberry32), so a failing case replays from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Proc {
  clock: ProcessClock;
  limiter: PartitionedRateLimiter;
  dead: boolean;
  loops: Promise<void>[];
}

/** Runs a simulation and audits every admission against the quota, exactly. */
export async function simulate(cfg: SimConfig): Promise<SimResult> {
  const base = new VirtualClock(1_000);
  const backend = new MemoryLeaseBackend({ clock: base });
  const random = prng(cfg.seed);
  const admissions: AuditEvent[] = [];
  const procs: Proc[] = [];
  let stopped = false;
  let generation = 0;
  const plan = { limit: cfg.limit, intervalMs: cfg.intervalMs, partitions: cfg.partitions, pools: {} };
  if (cfg.precreatePlan) await backend.ensurePlan("sim", plan, { graceMs: 0 });

  const start = (slot: number): void => {
    const clock = new ProcessClock(base, 1 + (cfg.drift[slot] ?? 0), random() * 1e6);
    const limiter = new PartitionedRateLimiter({
      resource: "sim",
      limit: cfg.limit,
      intervalMs: cfg.intervalMs,
      partitions: cfg.partitions,
      backend,
      clock,
      leaseTtlMs: cfg.leaseTtlMs,
      slicesPerInterval: cfg.slicesPerInterval,
      holderId: `p${slot}-g${generation++}`,
    });
    const proc: Proc = { clock, limiter, dead: false, loops: [] };
    if (process.env.SIM_TRACE) {
      const trace = (event: string) => (payload: object) => console.log(base.now().toFixed(1), slot, event, JSON.stringify(payload));
      limiter.on("acquired", trace("acquired")).on("released", trace("released")).on("lost", trace("lost"));
    }
    const loop = async (): Promise<void> => {
      while (!stopped && !proc.dead) {
        await clock.running();
        if (stopped || proc.dead) return;
        const cost = cfg.costs[Math.floor(random() * cfg.costs.length)]!;
        try {
          await limiter.acquire(cost, { timeoutMs: 5_000 });
        } catch {
          if (stopped || proc.dead || limiter.stats().closed) return;
          continue;
        }
        // A dead process does nothing, so it cannot send what it was admitted.
        if (proc.dead) return;
        admissions.push({ t: base.now(), units: cost });
      }
    };
    for (let i = 0; i < cfg.concurrency; i++) proc.loops.push(loop());
    procs[slot] = proc;
  };

  for (let i = 0; i < cfg.processes; i++) start(i);

  for (const fault of cfg.faults) {
    base.setTimeout(() => {
      if (stopped) return;
      switch (fault.kind) {
        case "pause": {
          const p = procs[fault.target % procs.length]!;
          if (p.dead) return;
          p.clock.pause();
          base.setTimeout(() => p.clock.resume(), fault.durationMs);
          return;
        }
        case "crash": {
          const slot = fault.target % procs.length;
          const p = procs[slot]!;
          if (p.dead) return;
          p.dead = true;
          p.clock.crash();
          base.setTimeout(() => {
            if (!stopped && procs[slot] === p) start(slot);
          }, fault.restartAfterMs);
          return;
        }
        case "restart": {
          const slot = fault.target % procs.length;
          const p = procs[slot]!;
          if (p.dead || p.clock.isPaused) return;
          p.dead = true;
          void p.limiter.close().then(() => {
            if (!stopped && procs[slot] === p) start(slot);
          });
          return;
        }
        case "renew-fail":
          backend.failNext("renew", fault.count);
          return;
        case "state-loss":
          backend.loseState();
          return;
        case "stall": {
          const resume = backend.stall();
          base.setTimeout(resume, fault.durationMs);
          return;
        }
        case "drop-replies":
          backend.dropNextReplies(fault.count);
          return;
        case "latency":
          backend.setLatency(fault.requestMs, fault.replyMs);
          base.setTimeout(() => backend.setLatency(0, 0), fault.durationMs);
          return;
      }
    }, fault.at);
  }

  await base.advance(cfg.durationMs);
  stopped = true;
  for (const p of procs) if (p.clock.isPaused) p.clock.resume();
  let settled = false;
  const closed = Promise.all(procs.filter((p) => !p.dead).map((p) => p.limiter.close())).then(() => (settled = true));
  // Closing may wait on stalled backend calls (bounded by their timeouts) and a quiet slice.
  for (let i = 0; i < 100 && !settled; i++) await base.advance(cfg.leaseTtlMs);
  if (!settled) throw new Error("simulation: limiters did not close within 100 TTLs of virtual time");
  await closed;
  await Promise.all(procs.flatMap((p) => (p.dead ? [] : p.loops)));
  // Timers of crashed processes and of waiters' timeouts run out on the base clock.
  await base.advance(Math.max(cfg.leaseTtlMs * 3, 6_000));
  return {
    admissions,
    audit: auditSlidingWindows(admissions, cfg.limit, cfg.intervalMs),
    leftoverTimers: base.pendingTimers,
  };
}
