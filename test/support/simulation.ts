import { PartitionedRateLimiter } from "../../src/limiter/partitioned-rate-limiter.js";
import { MemoryLeaseBackend, type MemorySnapshot } from "../../src/lease-backends/memory.js";
import { validatePlan } from "../../src/contract/plan.js";
import { VirtualClock } from "../../src/testing/virtual-clock.js";
import { ProcessClock } from "./process-clock.js";
import { auditSlidingWindows, type AuditEvent, type AuditResult } from "./audit.js";
import { precreatePlan } from "./precreate-plan.js";

/** Process settings a deployment may get wrong: a rolling deploy with changed options. */
export type MisconfiguredField = "slicesPerInterval" | "leaseTtlMs" | "jitterMs" | "driftFactor" | "limit";

/** A fault or deployment event at virtual time `at` (ms). */
export type SimFault =
  | { at: number; kind: "pause"; target: number; durationMs: number }
  | { at: number; kind: "crash"; target: number; restartAfterMs: number }
  | { at: number; kind: "restart"; target: number }
  | { at: number; kind: "renew-fail"; count: number }
  | { at: number; kind: "state-loss" }
  | { at: number; kind: "stall"; durationMs: number }
  | { at: number; kind: "drop-replies"; count: number }
  | { at: number; kind: "latency"; requestMs: number; replyMs: number; durationMs: number }
  /** The backend restarts from a snapshot taken `ageMs` earlier (plan kept, leases reverted, new identity). */
  | { at: number; kind: "restore"; ageMs: number }
  /** A replica with every write is promoted (new identity, nothing lost). */
  | { at: number; kind: "failover" }
  /** An operator replaces the plan: the limit scaled by `limitFactor`, optionally other slices or TTL. */
  | { at: number; kind: "replace"; limitFactor: number; slicesPerInterval?: number; leaseTtlMs?: number }
  /** A process restarted with one setting changed (it does not follow the plan). */
  | { at: number; kind: "misconfigured-restart"; target: number; field: MisconfiguredField };

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
  /** Limiters adopt the stored plan and its replacements (default false: a fixed configuration). */
  follow?: boolean;
  /** Per process: its `weight` (default 1). */
  weights?: number[];
  /** Per process: its `reserve` (default 0). */
  reserves?: number[];
  /** Per process: when it starts, in ms of virtual time from the start (default 0). */
  joinAtMs?: number[];
  /** Per process: when it closes for good (default: runs to the end). */
  leaveAtMs?: (number | null)[];
}

/** A live process at the end of a simulation, just before the limiters are closed. */
export interface SimFinalHolder {
  readonly slot: number;
  readonly holderId: string;
  readonly weight: number;
  readonly reserve: number;
  /** Partitions it held (leases it may admit on). */
  readonly held: number;
  /** Its fair share as it computed it last. */
  readonly fairShare: number;
}

/** What a simulation produced. */
export interface SimResult {
  admissions: AuditEvent[];
  audit: AuditResult;
  /** Timers left on the shared clock after every live limiter closed. */
  leftoverTimers: number;
  /** The live processes at the end, in order of their (last) start. */
  final: SimFinalHolder[];
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
  slot: number;
  startedAt: number;
  clock: ProcessClock;
  limiter: PartitionedRateLimiter;
  dead: boolean;
  loops: Promise<void>[];
}

/** The options a misconfigured process gets instead of `value`. */
function changed(field: MisconfiguredField, value: number): number {
  switch (field) {
    case "slicesPerInterval":
      return value > 1 ? Math.max(1, Math.floor(value / 2)) : 2;
    case "leaseTtlMs":
      return Math.min(60_000, value * 2);
    case "jitterMs":
      return value + 20;
    case "driftFactor":
      return value * 2 + 0.001;
    case "limit":
      return value * 2;
  }
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
  if (cfg.precreatePlan) {
    await precreatePlan(backend, "sim", { limit: cfg.limit, intervalMs: cfg.intervalMs, partitions: cfg.partitions, leaseTtlMs: cfg.leaseTtlMs, slicesPerInterval: cfg.slicesPerInterval });
  }

  const settings = { limit: cfg.limit, slicesPerInterval: cfg.slicesPerInterval, leaseTtlMs: cfg.leaseTtlMs, jitterMs: 5, driftFactor: 0.001 };
  const snapshots: Array<{ at: number; snapshot: MemorySnapshot }> = [];
  const start = (slot: number, misconfigured?: MisconfiguredField): void => {
    const clock = new ProcessClock(base, 1 + (cfg.drift[slot] ?? 0), random() * 1e6);
    const own = { ...settings };
    if (misconfigured) own[misconfigured] = changed(misconfigured, own[misconfigured]);
    let limiter: PartitionedRateLimiter;
    try {
      limiter = new PartitionedRateLimiter({
        resource: "sim",
        intervalMs: cfg.intervalMs,
        partitions: cfg.partitions,
        backend,
        clock,
        ...own,
        followPlan: cfg.follow === true && !misconfigured,
        weight: cfg.weights?.[slot] ?? 1,
        reserve: cfg.reserves?.[slot] ?? 0,
        holderId: `p${slot}-g${generation++}${misconfigured ? `-${misconfigured}` : ""}`,
        random: prng(Math.floor(random() * 2 ** 31)),
      });
    } catch {
      return; // a setting no plan can have (a ConfigError in the constructor): the deploy fails at once
    }
    const proc: Proc = { slot, startedAt: base.now(), clock, limiter, dead: false, loops: [] };
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
          // A caller retrying a refusal at once (a cost that a replaced, smaller plan can never
          // admit: CostExceedsLimitError) would spin without virtual time ever moving.
          await new Promise<void>((resolve) => base.setTimeout(resolve, 10));
          continue;
        }
        // A dead process does nothing, so it cannot send what it was admitted.
        if (proc.dead) return;
        // Tagged with the limit of the plan it was admitted under: windows holding admissions of
        // several plans are audited against the lowest.
        admissions.push({ t: base.now(), units: cost, limit: limiter.limit });
      }
    };
    for (let i = 0; i < cfg.concurrency; i++) proc.loops.push(loop());
    procs[slot] = proc;
  };

  for (let i = 0; i < cfg.processes; i++) {
    const joinAt = cfg.joinAtMs?.[i] ?? 0;
    if (joinAt <= 0) start(i);
    else base.setTimeout(() => !stopped && start(i), joinAt);
    const leaveAt = cfg.leaveAtMs?.[i];
    if (leaveAt !== undefined && leaveAt !== null) {
      base.setTimeout(() => {
        const p = procs[i];
        if (stopped || !p || p.dead) return;
        p.dead = true;
        void p.limiter.close();
      }, leaveAt);
    }
  }

  for (const fault of cfg.faults) {
    base.setTimeout(() => {
      if (stopped) return;
      switch (fault.kind) {
        case "pause": {
          const p = procs[fault.target % cfg.processes];
          if (!p || p.dead) return;
          p.clock.pause();
          base.setTimeout(() => p.clock.resume(), fault.durationMs);
          return;
        }
        case "crash": {
          const slot = fault.target % cfg.processes;
          const p = procs[slot];
          if (!p || p.dead) return;
          p.dead = true;
          p.clock.crash();
          base.setTimeout(() => {
            if (!stopped && procs[slot] === p) start(slot);
          }, fault.restartAfterMs);
          return;
        }
        case "restart": {
          const slot = fault.target % cfg.processes;
          const p = procs[slot];
          if (!p || p.dead || p.clock.isPaused) return;
          p.dead = true;
          void p.limiter.close().then(() => {
            if (!stopped && procs[slot] === p) start(slot);
          });
          return;
        }
        case "renew-fail":
          backend.failNext("heartbeat", fault.count);
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
        case "restore": {
          const wanted = base.now() - fault.ageMs;
          const older = snapshots.filter((s) => s.at <= wanted).at(-1) ?? snapshots[0];
          if (older) backend.restore(older.snapshot);
          return;
        }
        case "failover":
          backend.failover();
          return;
        case "replace": {
          void backend.readPlan("sim", {}).then(async (current) => {
            if (!current) return;
            const limit = Math.max(1, Math.round(current.plan.limit * fault.limitFactor));
            const plan = validatePlan({
              ...current.plan,
              limit,
              slicesPerInterval: fault.slicesPerInterval ?? current.plan.slicesPerInterval,
              leaseTtlMs: fault.leaseTtlMs ?? current.plan.leaseTtlMs,
            });
            await backend.replacePlan("sim", plan, {});
          }).catch(() => undefined); // a plan that cannot be (too many slices for the limit): no change
          return;
        }
        case "misconfigured-restart": {
          const slot = fault.target % cfg.processes;
          const p = procs[slot];
          if (!p || p.dead || p.clock.isPaused) return;
          p.dead = true;
          void p.limiter.close().then(() => {
            if (!stopped && procs[slot] === p) start(slot, fault.field);
          });
          return;
        }
      }
    }, fault.at);
  }
  // Snapshots every half second, for "restore" faults to pick from.
  for (let t = 0; t < cfg.durationMs; t += 500) base.setTimeout(() => snapshots.push({ at: base.now(), snapshot: backend.snapshot() }), t);

  await base.advance(cfg.durationMs);
  const final: SimFinalHolder[] = procs
    .filter((p): p is Proc => p !== undefined && !p.dead && !p.clock.isPaused)
    .sort((a, b) => a.startedAt - b.startedAt)
    .map((p) => {
      const stats = p.limiter.stats();
      return { slot: p.slot, holderId: stats.holderId, weight: cfg.weights?.[p.slot] ?? 1, reserve: cfg.reserves?.[p.slot] ?? 0, held: stats.partitions.length, fairShare: stats.fairShare };
    });
  stopped = true;
  for (const p of procs) if (p?.clock.isPaused) p.clock.resume();
  let settled = false;
  const closed = Promise.all(procs.filter((p) => p && !p.dead).map((p) => p.limiter.close())).then(() => (settled = true));
  // Closing may wait on stalled backend calls (bounded by their timeouts) and a quiet slice.
  for (let i = 0; i < 100 && !settled; i++) await base.advance(cfg.leaseTtlMs);
  if (!settled) throw new Error("simulation: limiters did not close within 100 TTLs of virtual time");
  await closed;
  await Promise.all(procs.flatMap((p) => (!p || p.dead ? [] : p.loops)));
  // Timers of crashed processes and of waiters' timeouts run out on the base clock.
  await base.advance(Math.max(cfg.leaseTtlMs * 3, 6_000));
  return {
    admissions,
    audit: auditSlidingWindows(admissions, cfg.limit, cfg.intervalMs),
    leftoverTimers: base.pendingTimers,
    final,
  };
}
