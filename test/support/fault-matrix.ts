import { randomUUID } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { auditSlidingWindows, type AuditResult } from "./audit.js";
import { precreatePlan } from "./precreate-plan.js";
import { createBackend, type BackendSpec } from "./backend-spec.js";
import type { Arrival } from "./recorder.js";
import { startRecorderProcess, type RecorderProcess } from "./recorder-process-client.js";
import { TcpProxy } from "./tcp-proxy.js";
import type { WorkerStats } from "./worker-protocol.js";
import { startWorkers, type WorkerGroup, type WorkerHandle } from "./workers.js";

// No jest imports here: the fault-matrix tests (test/faults/*-faults.test.ts) assert on what it returns.

/** Options of a {@link FaultMatrix}: the backend and the shared quota its rows run. */
export interface FaultMatrixOptions {
  /** Names the backend in the printed table's heading. */
  readonly backend: string;
  /** Lease TTL of every worker, in ms. */
  readonly ttlMs: number;
  /** Ports of the servers the workers reach, each through its own TcpProxy (in this order); read at every row. */
  readonly serverPorts: () => readonly number[];
  /** The spec the workers use, given the proxies' ports (in the order of `serverPorts`). */
  readonly workerSpec: (proxyPorts: readonly number[]) => BackendSpec;
  /** The spec the plan is stored through before the workers start (directly, without grace). */
  readonly directSpec: () => BackendSpec;
  readonly limit?: number;
  readonly intervalMs?: number;
  readonly partitions?: number;
  readonly workers?: number;
  /** The limiter's jitterMs. Default 50: loopback HTTP delays vary by a few ms (as in the integration tests). */
  readonly jitterMs?: number;
  /** Demand loops per worker. Default 16. */
  readonly concurrency?: number;
  /** How long the workers may take to hold every partition at the start of a row, in ms. Default 20,000. */
  readonly rampTimeoutMs?: number;
  /** Steady state before the fault is injected, in ms. Default 2,000. */
  readonly steadyMs?: number;
}

/** What a row's fault injection gets. */
export interface Row {
  /** The row's resource (fresh per row). */
  readonly resource: string;
  /** The recorder, in a process of its own; `recorder.now()` is the timeline of every arrival. */
  readonly recorder: RecorderProcess;
  readonly group: WorkerGroup;
  /** One proxy per server, in the order of `serverPorts`. */
  readonly proxies: readonly TcpProxy[];
  /** The first proxy. */
  readonly proxy: TcpProxy;
  /** Resolves the recorder time at which live workers hold every partition again. */
  full(timeoutMs: number, what: string): Promise<number>;
  /** Units that arrived in [from, to), from one worker or all (after fetching every arrival so far). */
  unitsIn(from: number, to: number, worker?: string): Promise<number>;
  /** Units arrived in [from, to) as a share of the limit over that span. */
  utilisation(from: number, to: number): Promise<number>;
  /** Notes the recorder time of a step, for the dump (see PRL_FAULT_DUMP). */
  mark(name: string): void;
}

/** The outcome of one row. */
export interface RowResult {
  /** The zero-tolerance audit of every arrival, windows of `intervalMs`. */
  readonly audit: AuditResult;
  /**
   * A diagnostic: the audit of send times (`x-sent-at` mapped to the recorder's clock) in windows
   * of `intervalMs + jitterMs`, the window the limiter paces. Windows over here mean the limiters
   * admitted too much; windows over in `audit` only mean in-flight delays varied by more than
   * `jitterMs` (a loaded machine).
   */
  readonly sendAudit: AuditResult;
  readonly arrivals: Arrival[];
  /** Admitted by a worker (its final stats) but never arrived, summed over workers not SIGKILLed. */
  readonly lost: number;
}

export const sleep = (ms: number): Promise<void> => new Promise<void>((resolve) => setTimeout(resolve, Math.max(0, ms)));

/** The worker that reported the most held partitions (the likeliest to matter when it fails). */
export function mostHeld(group: WorkerGroup): WorkerHandle {
  return [...group.workers].sort((a, b) => (b.stats()?.limiter.heldPartitions ?? 0) - (a.stats()?.limiter.heldPartitions ?? 0))[0]!;
}

/** What the shared worker faults need of a row (a FaultMatrix row, or a backend file's own). */
export interface WorkerFaultRow {
  readonly recorder: { now(): number };
  readonly group: WorkerGroup;
  full(timeoutMs: number, what: string): Promise<number>;
  unitsIn(from: number, to: number, worker?: string): Promise<number>;
  mark?(name: string): void;
}

/**
 * SIGKILLs the worker holding the most partitions and waits until the survivors hold every one
 * again. Resolves to how many it held and the recovery time from the kill, in ms.
 */
export async function killMostHeld(r: WorkerFaultRow, recoveryTimeoutMs: number, settleMs: number): Promise<{ victimHeld: number; recoveryMs: number }> {
  const victim = mostHeld(r.group);
  const victimHeld = victim.stats()?.limiter.heldPartitions ?? 0;
  const at = r.recorder.now();
  victim.kill("SIGKILL");
  r.mark?.("killed");
  const recoveryMs = (await r.full(recoveryTimeoutMs, "survivors taking the killed worker's partitions")) - at;
  await sleep(settleMs);
  return { victimHeld, recoveryMs };
}

/**
 * SIGSTOPs the worker holding the most partitions for 2.5 × TTL, then SIGCONTs it; once the
 * survivors close, it must take partitions again. Resolves to the survivors' recovery time, the
 * units the stopped worker delivered after its stop (must be 0), and what it delivered on rejoining.
 */
export async function stopMostHeld(
  r: WorkerFaultRow,
  ttlMs: number,
  partitions: number,
): Promise<{ recoveryMs: number; duringPause: number; rejoined: number }> {
  const victim = mostHeld(r.group);
  const stoppedAt = r.recorder.now();
  victim.kill("SIGSTOP");
  r.mark?.("stopped");
  // The stopped worker's last report still counts its partitions: sum the others'.
  const others = r.group.workers.filter((w) => w !== victim);
  const othersFull = () => others.reduce((s, w) => s + (w.stats()?.limiter.heldPartitions ?? 0), 0) === partitions;
  const recoveryMs = (await r.group.waitFor(othersFull, ttlMs + 5000, "survivors taking the stopped worker's partitions")) - stoppedAt;
  await sleep(2.5 * ttlMs - (r.recorder.now() - stoppedAt));
  victim.kill("SIGCONT");
  r.mark?.("resumed");
  const resumedAt = r.recorder.now();
  await sleep(1500);
  // Requests sent before the stop may still land just after it; none may come after, and none in
  // the first 150 ms after it resumes (on the leases whose deadlines passed while it was stopped):
  // a legitimate new partition takes a heartbeat, the others' two quiet slices and an acquire.
  const duringPause = await r.unitsIn(stoppedAt + 100, resumedAt + 150, victim.id);
  // The resumed worker publishes its demand; the saturated survivors give its fair share back.
  await r.group.waitFor(() => (victim.stats()?.limiter.heldPartitions ?? 0) > 0, ttlMs + 3000, "the resumed worker taking partitions");
  await sleep(1500);
  const rejoined = await r.unitsIn(resumedAt, r.recorder.now(), victim.id);
  return { recoveryMs, duringPause, rejoined };
}

/**
 * FaultMatrix runs the real-process fault rows of issue #8 on one backend: per row a fresh
 * resource whose plan is stored without grace, a recorder process stamping every arrival (its own
 * process, so stalls of the test process cannot bunch arrivals up), a TcpProxy in
 * front of each server, `workers` worker processes saturating the quota until they hold every
 * partition, a steady state, then the row's fault; finally every live worker is stopped (closing
 * its limiter) and all arrivals are audited exactly. {@link FaultMatrix.report} collects one
 * table row per fault; {@link FaultMatrix.table} prints them. With `PRL_FAULT_DUMP=<dir>` every
 * row writes its arrivals, marks and audits to a JSON file there, for diagnosis.
 */
export class FaultMatrix {
  readonly limit: number;
  readonly intervalMs: number;
  readonly partitions: number;
  readonly ttlMs: number;
  readonly workers: number;
  readonly jitterMs: number;
  private readonly rows: string[] = [];

  constructor(private readonly o: FaultMatrixOptions) {
    this.limit = o.limit ?? 200;
    this.intervalMs = o.intervalMs ?? 1000;
    this.partitions = o.partitions ?? 20;
    this.ttlMs = o.ttlMs;
    this.workers = o.workers ?? 4;
    this.jitterMs = o.jitterMs ?? 50;
  }

  /** Runs one row (see the class comment); `workerEnv` is set in the workers' environment. */
  async row(inject: (r: Row) => Promise<void>, workerEnv: Record<string, string> = {}): Promise<RowResult> {
    const o = this.o;
    const resource = `faults-${randomUUID().slice(0, 8)}`;
    const direct = await createBackend(o.directSpec());
    try {
      await precreatePlan(direct.backend, resource, { limit: this.limit, intervalMs: this.intervalMs, partitions: this.partitions, leaseTtlMs: this.ttlMs, jitterMs: this.jitterMs });
    } finally {
      await direct.close();
    }
    const proxies = o.serverPorts().map((port) => new TcpProxy(port));
    await Promise.all(proxies.map((p) => p.start()));
    const recorder = await startRecorderProcess();
    const saved: Record<string, string | undefined> = {};
    for (const [k, v] of Object.entries(workerEnv)) {
      saved[k] = process.env[k];
      process.env[k] = v;
    }
    let group: WorkerGroup | null = null;
    const finals = new Map<string, WorkerStats | null>();
    const marks: Record<string, number> = {};
    try {
      try {
        group = await startWorkers(this.workers, o.workerSpec(proxies.map((p) => p.port)), {
          limiter: {
            resource,
            limit: this.limit,
            intervalMs: this.intervalMs,
            partitions: this.partitions,
            leaseTtlMs: this.ttlMs,
            jitterMs: this.jitterMs,
          },
          targetUrl: recorder.url,
          concurrency: o.concurrency ?? 16,
        });
      } finally {
        for (const [k, v] of Object.entries(saved)) {
          if (v === undefined) delete process.env[k];
          else process.env[k] = v;
        }
      }
      const g = group;
      const unitsIn = async (from: number, to: number, worker?: string): Promise<number> => {
        await recorder.sync();
        return recorder
          .arrivals()
          .filter((a) => a.t >= from && a.t < to && (worker === undefined || a.worker === worker))
          .reduce((s, a) => s + a.cost, 0);
      };
      const r: Row = {
        resource,
        recorder,
        group: g,
        proxies,
        proxy: proxies[0]!,
        full: (timeoutMs, what) => g.waitFor(() => g.heldPartitions() === this.partitions, timeoutMs, what),
        unitsIn,
        utilisation: async (from, to) => (await unitsIn(from, to)) / ((this.limit * (to - from)) / this.intervalMs),
        mark: (name) => {
          marks[name] = recorder.now();
        },
      };
      await r.full(o.rampTimeoutMs ?? 20_000, "holding every partition at start");
      await sleep(o.steadyMs ?? 2000);
      r.mark("inject");
      await inject(r);
      r.mark("stop");
      for (const w of g.workers) {
        w.kill("SIGCONT"); // a no-op unless a row left it stopped
        if (w.alive) finals.set(w.id, await w.stop());
      }
    } catch (error) {
      const logs = group?.workers.map((w) => `${w.id}: ${w.logs().join(" | ")}`).join("\n") ?? "";
      throw new Error(`${(error as Error).message}\nworker logs:\n${logs}`, { cause: error });
    } finally {
      if (group) await group.stop();
      await recorder.stop();
      await Promise.all(proxies.map((p) => p.stop()));
    }
    const arrivals = recorder.arrivals();
    let lost = 0;
    for (const [id, stats] of finals) {
      const arrived = arrivals.filter((a) => a.worker === id).length;
      lost += (stats?.limiter.admitted ?? 0) - arrived;
    }
    const audit = auditSlidingWindows(arrivals.map((a) => ({ t: a.t, units: a.cost })), this.limit, this.intervalMs);
    const sendAudit = auditSlidingWindows(
      arrivals.map((a) => ({ t: a.sentAt ?? a.t, units: a.cost })),
      this.limit,
      this.intervalMs + this.jitterMs,
    );
    const dumpDir = process.env.PRL_FAULT_DUMP;
    if (dumpDir) {
      // For diagnosis: every arrival, the row's marks and both audits, one JSON file per row.
      mkdirSync(dumpDir, { recursive: true });
      writeFileSync(join(dumpDir, `${o.backend.split(" ")[0]}-${resource}.json`), JSON.stringify({ marks, audit, sendAudit, lost, arrivals }));
    }
    return { audit, sendAudit, arrivals, lost };
  }

  /**
   * Adds a table row: fault, what was injected, windows over, worst window, recovery, lost, arrivals.
   * `recovery` is a time in ms, a text, or null ("-").
   */
  report(name: string, faults: string, result: RowResult, recovery: number | string | null): void {
    const a = result.audit;
    const cell = recovery === null ? "-" : typeof recovery === "number" ? `${Math.round(recovery)} ms` : recovery;
    this.rows.push(`| ${name} | ${faults} | ${a.overLimitWindows} | ${(a.worstRatio * 100).toFixed(1)}% | ${cell} | ${result.lost} | ${a.events} |`);
  }

  /** The heading and every reported row, or "" when none was reported. */
  table(): string {
    if (this.rows.length === 0) return "";
    const heading =
      `${this.o.backend} fault matrix (${this.workers} processes, limit ${this.limit}/${this.intervalMs} ms, ` +
      `${this.partitions} partitions, ttl ${this.ttlMs} ms):`;
    return `${heading}\n${this.rows.join("\n")}\n`;
  }
}

/**
 * Runs `start` with the environment variables `names` unset, so a server module starts its own
 * server instead of using a shared one: fault rows kill and restart their servers.
 */
export async function withoutEnv<T>(names: readonly string[], start: () => Promise<T>): Promise<T> {
  const saved = names.map((n) => [n, process.env[n]] as const);
  for (const n of names) delete process.env[n];
  try {
    return await start();
  } finally {
    for (const [n, v] of saved) if (v !== undefined) process.env[n] = v;
  }
}
