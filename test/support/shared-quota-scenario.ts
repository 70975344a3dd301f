import { auditSlidingWindows, type AuditResult } from "./audit.js";
import { createBackend, type BackendSpec } from "./backend-spec.js";
import { precreatePlan } from "./precreate-plan.js";
import type { Arrival, Recorder } from "./recorder.js";
import { startRecorderProcess, type RecorderProcess } from "./recorder-process-client.js";
import { startWorkers, type WorkerGroup } from "./workers.js";

// No jest imports here: the integration tests assert on the result; benchmarks may print it.

/** Options of {@link runSharedQuotaScenario}. */
export interface SharedQuotaScenarioOptions {
  readonly spec: BackendSpec;
  /** Lease TTL of every worker, in ms. */
  readonly leaseTtlMs: number;
  /** Resource name; use a fresh one per run so no earlier plan or lease interferes. */
  readonly resource: string;
  readonly workers?: number;
  readonly limit?: number;
  readonly intervalMs?: number;
  readonly partitions?: number;
  /** The limiter's jitterMs: arrival-time spread the pace absorbs. Default 50. */
  readonly jitterMs?: number;
  /** Length of the measured steady state before the kill, in ms. Default 10,000. */
  readonly steadyMs?: number;
  /** How long to keep running after the survivors hold every partition again, in ms. Default 2,000. */
  readonly afterTakeoverMs?: number;
  /** How long the workers may take to hold every partition at start, in ms. Default 20,000. */
  readonly rampTimeoutMs?: number;
  /** Concurrent demand loops per worker. Default 32. */
  readonly concurrency?: number;
  /**
   * Starts the service the workers call, given the quota. Default: an HTTP {@link startRecorder}
   * enforcing nothing; `startGrpcRecorder` makes the workers call it over gRPC through the client
   * interceptor.
   */
  readonly recorder?: (quota: { limit: number; intervalMs: number }) => Promise<Recorder>;
}

/** Measurements of one {@link runSharedQuotaScenario} run. Times are in ms. */
export interface SharedQuotaScenarioResult {
  /** Zero-tolerance audit of every arrival of the whole run. */
  readonly audit: AuditResult;
  /**
   * A diagnostic: the audit of send times (`x-sent-at`, on each worker's clock mapped to the
   * recorder's) against windows of `intervalMs + jitterMs`, the window the limiter paces. Over-limit
   * windows here mean the limiter (or backend) admitted too much; over-limit arrivals with none
   * here mean in-flight delays varied by more than `jitterMs`.
   */
  readonly sendAudit: AuditResult;
  /** When the worst arrival window starts, relative to the kill (negative: before it). */
  readonly worstWindowFromKillMs: number;
  /** From the start signal until the workers together held every partition. */
  readonly rampMs: number;
  /**
   * The steady state: it starts one interval after every partition was first held (so the first
   * full window is already paced at full capacity) and lasts `steadyMs`, ending at the kill.
   */
  readonly steady: {
    readonly units: number;
    /** Units arrived in the steady state ÷ (limit × steadyMs / intervalMs). */
    readonly utilisation: number;
    /** The best any limiter can do here: the pace is `limit` per `intervalMs + jitterMs`, stretched by driftFactor 0.001. */
    readonly pacedCeiling: number;
    /** Backend calls per second by all workers together. */
    readonly backendCallsPerSecond: number;
    /** Largest spread (max − min) of one worker's in-flight delays, over all workers. */
    readonly delaySpreadMs: number;
  };
  /** The killed worker and how many partitions it held. */
  readonly killed: { readonly id: string; readonly heldPartitions: number };
  /** From the SIGKILL until the survivors' held partitions summed to `partitions` again. */
  readonly takeoverMs: number;
  /** From the SIGKILL to the start of the first full interval whose arrivals reached 90% of the limit. Null if none did. */
  readonly rateRecoveryMs: number | null;
  /** Held partitions per worker in the steady state (latest report before the kill). */
  readonly heldBeforeKill: Record<string, number>;
  /** Requests that failed on the network, all workers. */
  readonly requestErrors: number;
  /** Requests the service answered as throttled (429, RESOURCE_EXHAUSTED), all workers. */
  readonly throttled: number;
  /** The whole run, from the recorder's start to the workers' exit. */
  readonly durationMs: number;
}

/**
 * runSharedQuotaScenario is the multi-process integration scenario of issue #4: a recorder plays
 * the throttled service; `workers` processes share one quota through the backend of `spec` under
 * saturating demand; after a steady state one worker (the one holding most) is SIGKILLed and the
 * others take its partitions over. The plan is stored beforehand as on a fresh server (the test
 * started it): a new plan on a server up for less than a minute otherwise grants nothing for the
 * longest TTL plus a window, which would only eat test time here. Workers are always stopped,
 * also on failure.
 */
export async function runSharedQuotaScenario(o: SharedQuotaScenarioOptions): Promise<SharedQuotaScenarioResult> {
  const limit = o.limit ?? 200;
  const intervalMs = o.intervalMs ?? 1000;
  const partitions = o.partitions ?? 20;
  const jitterMs = o.jitterMs ?? 50;
  const steadyMs = o.steadyMs ?? 10_000;
  const workers = o.workers ?? 4;
  // In a process of its own: work in this one (a TcpProxy in front of an external server, stats
  // from the workers) must not stamp arrivals late.
  const recorder = o.recorder ? await o.recorder({ limit, intervalMs }) : await startRecorderProcess();
  const started = recorder.now();
  let group: WorkerGroup | null = null;
  try {
    const built = await createBackend(o.spec);
    try {
      await precreatePlan(built.backend, o.resource, { limit, intervalMs, partitions, leaseTtlMs: o.leaseTtlMs, jitterMs });
    } finally {
      await built.close();
    }

    group = await startWorkers(workers, o.spec, {
      limiter: { resource: o.resource, limit, intervalMs, partitions, leaseTtlMs: o.leaseTtlMs, jitterMs },
      targetUrl: recorder.url,
      concurrency: o.concurrency ?? 32,
    });
    const g = group;
    const startSignal = recorder.now();
    const fullAt = await g.waitFor(() => g.heldPartitions() === partitions, o.rampTimeoutMs ?? 20_000, "holding every partition at start");
    const steadyFrom = fullAt + intervalMs;
    const steadyTo = steadyFrom + steadyMs;
    await sleep(steadyFrom - recorder.now());
    const callsAtFrom = totalBackendCalls(g);
    await sleep(steadyTo - recorder.now());
    const callsAtTo = totalBackendCalls(g);

    const heldBeforeKill: Record<string, number> = {};
    for (const w of g.workers) heldBeforeKill[w.id] = w.stats()?.limiter.heldPartitions ?? 0;
    const victim = [...g.workers].sort((a, b) => (heldBeforeKill[b.id] ?? 0) - (heldBeforeKill[a.id] ?? 0))[0]!;
    const killedAt = recorder.now();
    victim.kill("SIGKILL");
    const takenOverAt = await g.waitFor(() => g.heldPartitions() === partitions, o.leaseTtlMs + 10_000, "the survivors taking every partition over");
    await sleep(o.afterTakeoverMs ?? 2_000);
    await g.stop();
    const finished = recorder.now();

    // A recorder in a child process copies arrivals over with a lag: fetch the last ones.
    if ("sync" in recorder && typeof recorder.sync === "function") await (recorder as RecorderProcess).sync();
    const arrivals = recorder.arrivals();
    const steadyUnits = unitsBetween(arrivals, steadyFrom, steadyTo);
    const requestErrors = g.workers.reduce((sum, w) => sum + (w.stats()?.requestErrors ?? 0), 0);
    const throttled = g.workers.reduce((sum, w) => sum + (w.stats()?.throttled ?? 0), 0);
    const audit = auditSlidingWindows(arrivals.map((a) => ({ t: a.t, units: a.cost })), limit, intervalMs);
    return {
      audit,
      sendAudit: auditSlidingWindows(arrivals.map((a) => ({ t: a.sentAt ?? a.t, units: a.cost })), limit, intervalMs + jitterMs),
      worstWindowFromKillMs: audit.worstAt - killedAt,
      rampMs: fullAt - startSignal,
      steady: {
        units: steadyUnits,
        utilisation: steadyUnits / ((limit * steadyMs) / intervalMs),
        pacedCeiling: intervalMs / ((intervalMs + jitterMs) * 1.001),
        backendCallsPerSecond: ((callsAtTo - callsAtFrom) * 1000) / steadyMs,
        delaySpreadMs: delaySpread(arrivals.filter((a) => a.t >= steadyFrom && a.t < steadyTo)),
      },
      killed: { id: victim.id, heldPartitions: heldBeforeKill[victim.id] ?? 0 },
      takeoverMs: takenOverAt - killedAt,
      rateRecoveryMs: rateRecovery(arrivals, killedAt, finished, limit, intervalMs),
      heldBeforeKill,
      requestErrors,
      throttled,
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

/** Formats a result as one line per figure, for test output and reports. */
export function describeScenarioResult(name: string, r: SharedQuotaScenarioResult): string {
  return [
    `${name}: ${r.audit.events} arrivals, ${r.audit.overLimitWindows} windows over the limit, worst window ${(r.audit.worstRatio * 100).toFixed(2)}% of the limit ` +
      `(${r.worstWindowFromKillMs.toFixed(0)} ms from the kill); send times: ${r.sendAudit.overLimitWindows} windows of interval + jitter over, worst ${(r.sendAudit.worstRatio * 100).toFixed(2)}%`,
    `  ramp ${r.rampMs.toFixed(0)} ms; steady utilisation ${(r.steady.utilisation * 100).toFixed(2)}% (paced ceiling ${(r.steady.pacedCeiling * 100).toFixed(2)}%), ` +
      `${r.steady.backendCallsPerSecond.toFixed(1)} backend calls/s, in-flight delay spread ${r.steady.delaySpreadMs.toFixed(1)} ms`,
    `  held before kill ${JSON.stringify(r.heldBeforeKill)}; killed ${r.killed.id} (${r.killed.heldPartitions} partitions); ` +
      `takeover ${r.takeoverMs.toFixed(0)} ms; rate ≥ 90% again ${r.rateRecoveryMs === null ? "never" : `${r.rateRecoveryMs.toFixed(0)} ms`} after the kill`,
    `  request errors ${r.requestErrors}; throttled ${r.throttled}; run ${(r.durationMs / 1000).toFixed(1)} s`,
  ].join("\n");
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

function totalBackendCalls(group: WorkerGroup): number {
  return group.workers.reduce((sum, w) => sum + (w.stats()?.backendCalls ?? 0), 0);
}

function unitsBetween(arrivals: readonly Arrival[], from: number, to: number): number {
  let units = 0;
  for (const a of arrivals) if (a.t >= from && a.t < to) units += a.cost;
  return units;
}

function delaySpread(arrivals: readonly Arrival[]): number {
  const byWorker = new Map<string, { min: number; max: number }>();
  for (const a of arrivals) {
    if (a.delayMs === null) continue;
    const seen = byWorker.get(a.worker);
    if (!seen) byWorker.set(a.worker, { min: a.delayMs, max: a.delayMs });
    else {
      seen.min = Math.min(seen.min, a.delayMs);
      seen.max = Math.max(seen.max, a.delayMs);
    }
  }
  let spread = 0;
  for (const { min, max } of byWorker.values()) spread = Math.max(spread, max - min);
  return spread;
}

/** The earliest window start s ≥ `from` (10 ms steps) whose [s, s + interval) received ≥ 90% of the limit, minus `from`. */
function rateRecovery(arrivals: readonly Arrival[], from: number, end: number, limit: number, intervalMs: number): number | null {
  const sorted = arrivals.filter((a) => a.t >= from).sort((a, b) => a.t - b.t);
  let head = 0;
  let tail = 0;
  let units = 0;
  for (let s = from; s + intervalMs <= end; s += 10) {
    while (tail < sorted.length && sorted[tail]!.t < s + intervalMs) units += sorted[tail++]!.cost;
    while (head < tail && sorted[head]!.t < s) units -= sorted[head++]!.cost;
    if (units >= 0.9 * limit) return s - from;
  }
  return null;
}
