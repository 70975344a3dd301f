import { auditSlidingWindows, type AuditResult } from "./audit.js";
import { createBackend, type BackendSpec } from "./backend-spec.js";
import { jainIndex } from "./fleet.js";
import { precreatePlan } from "./precreate-plan.js";
import { startRecorderProcess } from "./recorder-process-client.js";
import { untilGranting } from "./servers/etcd.js";
import { startWorkers, type WorkerGroup } from "./workers.js";

// No jest imports here: the integration test asserts on the result; benchmarks may print it.

/** One worker of a {@link runFairShareScenario}: when it joins, and its weight and reserve. */
export interface FairShareMember {
  /** When the worker starts its limiter, ms after the first member's start signal. */
  readonly joinAtMs: number;
  /** Its `weight` option. Default 1. */
  readonly weight?: number;
  /** Its `reserve` option. Default 0. */
  readonly reserve?: number;
}

/** Options of {@link runFairShareScenario}. Times are in ms. */
export interface FairShareScenarioOptions {
  readonly spec: BackendSpec;
  /** A fresh resource name per run. */
  readonly resource: string;
  readonly leaseTtlMs: number;
  readonly members: readonly FairShareMember[];
  readonly limit?: number;
  readonly intervalMs?: number;
  readonly partitions?: number;
  /** The plan's jitterMs. Default 50 (several processes on 2 cores; as the shared-quota scenario). */
  readonly jitterMs?: number;
  /** After the last join, how long to wait for every member to hold its ideal share within one partition. Default leaseTtlMs + 3,000. */
  readonly settleTimeoutMs?: number;
  /** The steady state measured after settling (it starts one interval after it). Default 8,000. */
  readonly steadyMs?: number;
  /** Concurrent demand loops per worker. Default 32 (saturating). */
  readonly concurrency?: number;
}

/** One stats sample of one worker, on the parent's `performance.now()`. */
export interface HeldSample {
  readonly at: number;
  readonly held: number;
  readonly moves: number;
}

/** What a {@link runFairShareScenario} run measured. Times are on the parent's `performance.now()` unless said otherwise. */
export interface FairShareScenarioResult {
  readonly ids: readonly string[];
  /** When each member's start signal was sent. */
  readonly joinedAt: readonly number[];
  /** Held partitions of each member, every stats report. */
  readonly timeline: readonly (readonly HeldSample[])[];
  /** The ideal share of each member with all members present (see {@link idealShares}). */
  readonly finalIdeal: readonly number[];
  /**
   * Per member: ms from its join until it first held, within one partition, its ideal share among
   * the members started by then (a later join lowers the share it is due); null if never.
   */
  readonly joinToShareMs: readonly (number | null)[];
  /** After the last join: when every member held its final ideal share within one partition; null if not within the settle timeout. */
  readonly settledAt: number | null;
  /** The steady window [from, to). */
  readonly steady: { readonly from: number; readonly to: number };
  /** Units each member's requests brought to the service in the steady window, per second. */
  readonly steadyRates: readonly number[];
  /** Jain's index of the steady rates, each divided by the member's final ideal share (1 = each got its share; equal shares: the plain index of the rates). */
  readonly jain: number;
  /** Largest |held − final ideal| of any member in any sample of the steady window. */
  readonly steadyMaxDeviation: number;
  /** Lease acquisitions and releases, all members, during the steady window. */
  readonly steadyMoves: number;
  /** Zero-tolerance audit of every arrival of the run. */
  readonly audit: AuditResult;
  readonly requestErrors: number;
  /** How long the backend took to grant a first lease (a fresh etcd's server clock), before the run. */
  readonly readyMs: number;
  readonly durationMs: number;
}

/**
 * idealShares is the allocation the issue asks for, computed without the library (the oracle of
 * the fair-share rows): all members saturated; reservations first, in join order, as long as
 * partitions last; the rest split in proportion to weight (continuous water filling: a member
 * whose reservation exceeds its proportional part keeps the reservation, the others share what is
 * left). Fractional; the library's whole-partition shares must be within one partition of it.
 */
export function idealShares(partitions: number, members: readonly { weight?: number; reserve?: number }[]): number[] {
  let left = partitions;
  const reserved = members.map((m) => {
    const r = Math.min(m.reserve ?? 0, left);
    left -= r;
    return r;
  });
  const fixed = new Set<number>();
  for (;;) {
    const free = members.map((_, i) => i).filter((i) => !fixed.has(i));
    const pool = partitions - [...fixed].reduce((s, i) => s + reserved[i]!, 0);
    const weights = free.reduce((s, i) => s + (members[i]!.weight ?? 1), 0);
    const level = weights === 0 ? 0 : pool / weights;
    const over = free.filter((i) => reserved[i]! > level * (members[i]!.weight ?? 1));
    if (over.length === 0) return members.map((m, i) => (fixed.has(i) ? reserved[i]! : level * (m.weight ?? 1)));
    for (const i of over) fixed.add(i);
  }
}

/**
 * runFairShareScenario is the fair-share acceptance scenario of the issue on real processes: a
 * recorder process plays the service; one worker process per member (all spawned and connected
 * first, so a join costs no start-up) starts its saturated limiter at its `joinAtMs`; every stats
 * report's held partitions is recorded. After the last join it waits until every member holds its
 * ideal share within one partition, then measures a steady window. The plan is stored beforehand
 * as on a fresh server, and a first grant is awaited (a fresh etcd grants nothing for one TTL).
 */
export async function runFairShareScenario(o: FairShareScenarioOptions): Promise<FairShareScenarioResult> {
  const limit = o.limit ?? 200;
  const intervalMs = o.intervalMs ?? 1000;
  const partitions = o.partitions ?? 20;
  const jitterMs = o.jitterMs ?? 50;
  const steadyMs = o.steadyMs ?? 8_000;
  const members = o.members;
  const n = members.length;
  const built = await createBackend(o.spec);
  let readyMs: number;
  try {
    readyMs = await untilGranting(built.backend, o.leaseTtlMs);
    await precreatePlan(built.backend, o.resource, { limit, intervalMs, partitions, leaseTtlMs: o.leaseTtlMs, jitterMs });
  } finally {
    await built.close();
  }
  const recorder = await startRecorderProcess();
  const started = recorder.now();
  let group: WorkerGroup | null = null;
  try {
    group = await startWorkers(n, o.spec, {
      limiter: { resource: o.resource, limit, intervalMs, partitions, leaseTtlMs: o.leaseTtlMs, jitterMs },
      limiterOverrides: members.map((m) => ({ ...(m.weight === undefined ? {} : { weight: m.weight }), ...(m.reserve === undefined ? {} : { reserve: m.reserve }) })),
      targetUrl: recorder.url,
      concurrency: o.concurrency ?? 32,
      autoStart: false,
    });
    const g = group;
    const ids = g.workers.map((w) => w.id);
    const timeline: HeldSample[][] = members.map(() => []);
    g.onStats((w, stats, at) => {
      const i = ids.indexOf(w.id);
      timeline[i]!.push({ at, held: stats.limiter.heldPartitions, moves: stats.limiter.leasesAcquired + stats.limiter.leasesReleased + stats.limiter.leasesLost });
    });
    const finalIdeal = idealShares(partitions, members);
    const held = (i: number) => g.workers[i]!.stats()?.limiter.heldPartitions ?? 0;

    const t0 = recorder.now();
    const order = members.map((_, i) => i).sort((a, b) => members[a]!.joinAtMs - members[b]!.joinAtMs);
    for (const i of order) {
      await sleep(t0 + members[i]!.joinAtMs - recorder.now());
      g.workers[i]!.start();
    }
    const lastJoin = recorder.now();
    const within = () => finalIdeal.every((ideal, i) => Math.abs(held(i) - ideal) <= 1);
    let settledAt: number | null;
    try {
      settledAt = await g.waitFor(within, o.settleTimeoutMs ?? o.leaseTtlMs + 3_000, "every member holding its share within one partition");
    } catch {
      settledAt = null;
    }
    const from = (settledAt ?? recorder.now()) + intervalMs;
    const to = from + steadyMs;
    await sleep(to - recorder.now());
    await g.stop();
    const finished = recorder.now();
    await recorder.sync();
    const arrivals = recorder.arrivals();

    const joinedAt = g.workers.map((w) => w.startedAt ?? NaN);
    // The share a member is due at time t: its ideal share among the members started by then.
    const idealAt = (i: number, t: number): number => {
      const present = members.filter((_, j) => j === i || joinedAt[j]! <= t);
      return idealShares(partitions, present)[present.indexOf(members[i]!)]!;
    };
    const joinToShareMs = members.map((_, i) => {
      const hit = timeline[i]!.find((s) => s.at >= joinedAt[i]! && Math.abs(s.held - idealAt(i, s.at)) <= 1);
      return hit ? hit.at - joinedAt[i]! : null;
    });
    const steadyRates = ids.map((id) => {
      let units = 0;
      for (const a of arrivals) if (a.worker === id && a.t >= from && a.t < to) units += a.cost;
      return (units * 1000) / steadyMs;
    });
    let steadyMaxDeviation = 0;
    let steadyMoves = 0;
    timeline.forEach((samples, i) => {
      const inside = samples.filter((s) => s.at >= from && s.at < to);
      for (const s of inside) steadyMaxDeviation = Math.max(steadyMaxDeviation, Math.abs(s.held - finalIdeal[i]!));
      const before = [...samples].reverse().find((s) => s.at < from);
      if (inside.length > 0) steadyMoves += inside.at(-1)!.moves - (before ?? inside[0]!).moves;
    });
    return {
      ids,
      joinedAt,
      timeline,
      finalIdeal,
      joinToShareMs,
      settledAt: settledAt === null ? null : settledAt - lastJoin,
      steady: { from, to },
      steadyRates,
      jain: jainIndex(steadyRates.map((r, i) => r / finalIdeal[i]!)),
      steadyMaxDeviation,
      steadyMoves,
      audit: auditSlidingWindows(arrivals.map((a) => ({ t: a.t, units: a.cost })), limit, intervalMs),
      requestErrors: g.workers.reduce((s, w) => s + (w.stats()?.requestErrors ?? 0), 0),
      readyMs,
      durationMs: finished - started,
    };
  } catch (error) {
    const logs = group?.workers.map((w) => `${w.id}: ${w.logs().join(" | ")}`).join("\n") ?? "";
    throw new Error(`${(error as Error).message}${logs ? `\nworker logs:\n${logs}` : ""}`, { cause: error });
  } finally {
    if (group) await group.stop();
    await recorder.stop();
  }
}

/** Formats a result for test output and reports. */
export function describeFairShareResult(name: string, r: FairShareScenarioResult): string {
  const ms = (x: number | null) => (x === null ? "never" : `${(x / 1000).toFixed(2)} s`);
  return [
    `${name}: join-to-share ${r.ids.map((id, i) => `${id} ${ms(r.joinToShareMs[i]!)}`).join(", ")}; ` +
      `all within one partition ${ms(r.settledAt)} after the last join`,
    `  steady ${((r.steady.to - r.steady.from) / 1000).toFixed(0)} s: held vs ideal max deviation ${r.steadyMaxDeviation.toFixed(2)}, ` +
      `rates ${r.steadyRates.map((x) => x.toFixed(1)).join("/")} per s, Jain ${r.jain.toFixed(4)}, ${r.steadyMoves} lease moves`,
    `  ${r.audit.events} arrivals, ${r.audit.overLimitWindows} windows over, worst window ${(r.audit.worstRatio * 100).toFixed(2)}% of the limit; ` +
      `request errors ${r.requestErrors}; first grant after ${r.readyMs} ms; run ${(r.durationMs / 1000).toFixed(1)} s`,
  ].join("\n");
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}
