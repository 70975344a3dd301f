import { precreatePlan } from "../test/support/precreate-plan.js";
import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";
import { auditSlidingWindows } from "../test/support/audit.js";
import { startRecorder, type Arrival } from "../test/support/recorder.js";
import { connectRedis, ms, pct, quantile, quitRedis, sleep, type BenchContext, type ScenarioResult } from "./common.js";
import { redisBackend, type Quota } from "./peers.js";
import { BENCH_WORKER_ENV, type BenchWorkerConfig, type BenchWorkerMessage, type BenchWorkerStats } from "./worker-protocol.js";

// Scenario 4: four processes share one quota and each wants more than all of it. Every request
// lands at one local HTTP server (test/support/recorder.ts), whose single clock times every
// arrival; the exact sliding-window auditor (test/support/audit.ts) then checks every window of
// intervalMs with zero tolerance.

const QUOTA: Quota = { limit: 500, intervalMs: 1000 };
const PROCESSES = 4;
const CONCURRENCY = 16;

interface AccuracyResult {
  readonly contender: string;
  readonly arrivals: number;
  readonly overLimitWindows: number;
  readonly worstRatio: number;
  readonly worstUnits: number;
  readonly steadyUtilisation: number;
  readonly steadySeconds: number;
  readonly delayMs: { p50: number; p99: number; max: number };
  readonly perWorker: Record<string, number>;
  readonly workers: BenchWorkerStats[];
}

function startWorker(config: BenchWorkerConfig): { child: ChildProcess; ready: Promise<void>; stopped: Promise<BenchWorkerStats | null> } {
  const child = fork(fileURLToPath(new URL("./worker.ts", import.meta.url)), [], {
    execArgv: ["--import", "tsx"],
    env: { ...process.env, [BENCH_WORKER_ENV]: JSON.stringify(config) },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  let onReady!: () => void;
  let onFail!: (error: Error) => void;
  const ready = new Promise<void>((resolve, reject) => {
    onReady = resolve;
    onFail = reject;
  });
  const stopped = new Promise<BenchWorkerStats | null>((resolve) => {
    child.on("message", (message: BenchWorkerMessage) => {
      if (message.type === "ready") onReady();
      else if (message.type === "failed") onFail(new Error(`worker ${config.id}: ${message.message}`));
      else if (message.type === "stopped") resolve(message.stats);
    });
    child.once("exit", (code) => {
      onFail(new Error(`worker ${config.id} exited with ${code} before it was ready`));
      resolve(null);
    });
  });
  return { child, ready, stopped };
}

async function runOne(ctx: BenchContext, kind: BenchWorkerConfig["kind"], label: string, durationMs: number, steadyFromMs: number, partitions: number): Promise<AccuracyResult> {
  const name = `${ctx.runId}-acc-${kind}-${partitions}`;
  if (kind === "ours") {
    // Store the plan without a grace period, so the first leases are granted at once.
    const client = await connectRedis(ctx.redisUrl);
    await precreatePlan(redisBackend(client, `bench:${name}:`), name, { ...QUOTA, partitions });
    await quitRedis(client);
  }
  const recorder = await startRecorder();
  const workers = Array.from({ length: PROCESSES }, (_, i) =>
    startWorker({
      id: `w${i}`, kind, redisUrl: ctx.redisUrl, name, quota: QUOTA, partitions, concurrency: CONCURRENCY, targetUrl: recorder.url,
    }),
  );
  try {
    await Promise.race([
      Promise.all(workers.map((w) => w.ready)),
      sleep(60_000).then(() => {
        throw new Error("workers were not ready within 60 s");
      }),
    ]);
    recorder.reset();
    const t0 = recorder.now();
    for (const w of workers) w.child.send({ type: "start" });
    await sleep(durationMs);
    const tStop = recorder.now();
    for (const w of workers) w.child.send({ type: "stop" });
    const stats = await Promise.race([Promise.all(workers.map((w) => w.stopped)), sleep(20_000).then(() => [] as (BenchWorkerStats | null)[])]);
    const arrivals: Arrival[] = recorder.arrivals();
    const audit = auditSlidingWindows(arrivals.map((a) => ({ t: a.t, units: a.cost })), QUOTA.limit, QUOTA.intervalMs);
    const steadyStart = t0 + steadyFromMs;
    const steady = arrivals.filter((a) => a.t >= steadyStart && a.t < tStop);
    const steadySeconds = (tStop - steadyStart) / 1000;
    const delays = arrivals.map((a) => a.delayMs).filter((d): d is number => d !== null).sort((a, b) => a - b);
    const perWorker: Record<string, number> = {};
    for (const a of steady) perWorker[a.worker] = (perWorker[a.worker] ?? 0) + a.cost;
    return {
      contender: label,
      arrivals: arrivals.length,
      overLimitWindows: audit.overLimitWindows,
      worstRatio: audit.worstRatio,
      worstUnits: Math.round(audit.worstRatio * QUOTA.limit),
      steadyUtilisation: steady.reduce((s, a) => s + a.cost, 0) / (QUOTA.limit * (steadySeconds * 1000 / QUOTA.intervalMs)),
      steadySeconds,
      delayMs: { p50: quantile(delays, 0.5), p99: quantile(delays, 0.99), max: delays[delays.length - 1] ?? NaN },
      perWorker,
      workers: stats.filter((s): s is BenchWorkerStats => s !== null),
    };
  } finally {
    for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill("SIGKILL");
    await recorder.stop();
  }
}

/** Scenario 4. */
export async function runAccuracy(ctx: BenchContext): Promise<ScenarioResult> {
  const started = performance.now();
  const durationMs = ctx.quick ? 6_000 : 30_000;
  const steadyFromMs = ctx.quick ? 3_000 : 5_000;
  const results: AccuracyResult[] = [];
  // Ours twice: 10 partitions (5 units per partition per slice) and the design's example of 20
  // (2.5 units per slice), which shows the cost of a fractional slice with unit costs.
  const contenders: Array<[BenchWorkerConfig["kind"], string, number]> = [
    ["ours", "ours (Redis backend), acquire(), 10 partitions", 10],
    ["ours", "ours (Redis backend), acquire(), 20 partitions", 20],
    ["rlf-redis", "rate-limiter-flexible Redis + RateLimiterQueue", 0],
    ["bottleneck-cluster", "bottleneck clustered", 0],
  ];
  for (const [kind, label, partitions] of contenders) {
    ctx.log(`  ${label}: ${PROCESSES} processes x ${CONCURRENCY} loops, ${durationMs / 1000} s`);
    const r = await runOne(ctx, kind, label, durationMs, steadyFromMs, partitions);
    ctx.log(`    worst window ${pct(r.worstRatio)} of limit, ${r.overLimitWindows} windows over, steady utilisation ${pct(r.steadyUtilisation, 2)}`);
    results.push(r);
  }
  const ours = results[0]!;
  const ours20 = results[1]!;
  return {
    name: "accuracy",
    title: "4. Accuracy under sharing (4 processes, one quota, arrivals audited)",
    seconds: (performance.now() - started) / 1000,
    tables: [
      {
        title:
          `${PROCESSES} processes x ${CONCURRENCY} loops of "wait for admission, then GET the recorder", sharing ${QUOTA.limit} per ${QUOTA.intervalMs} ms for ${durationMs / 1000} s; ` +
          `every sliding window of ${QUOTA.intervalMs} ms over the arrivals checked exactly; utilisation = arrivals / quota from ${steadyFromMs / 1000} s to the end`,
        headers: ["contender", "arrivals", "windows over limit", "worst window (units, x limit)", "steady utilisation", "in-flight delay p50 / p99 / max ms", "workers' event-loop delay p99 ms", "steady share per process"],
        rows: results.map((r) => [
          r.contender,
          String(r.arrivals),
          String(r.overLimitWindows),
          `${r.worstUnits} (${r.worstRatio.toFixed(3)}x)`,
          pct(r.steadyUtilisation, 2),
          `${ms(r.delayMs.p50)} / ${ms(r.delayMs.p99)} / ${ms(r.delayMs.max)}`,
          ms(Math.max(...r.workers.map((w) => w.loopDelayMs.p99))),
          Object.keys(r.perWorker).sort().map((w) => r.perWorker[w]).join(" / "),
        ]),
      },
    ],
    targets: [
      { what: "ours windows over the limit (10 partitions)", goal: "0", measured: String(ours.overLimitWindows), met: ours.overLimitWindows === 0 },
      { what: "ours windows over the limit (20 partitions)", goal: "0", measured: String(ours20.overLimitWindows), met: ours20.overLimitWindows === 0 },
      { what: "ours steady-state utilisation (10 partitions)", goal: ">= 98%", measured: pct(ours.steadyUtilisation, 2), met: ours.steadyUtilisation >= 0.98 },
      { what: "ours steady-state utilisation (20 partitions)", goal: ">= 98%", measured: pct(ours20.steadyUtilisation, 2), met: ours20.steadyUtilisation >= 0.98 },
    ],
    notes: [
      `Ours gives up jitterMs/intervalMs = 0.5% and driftFactor = 0.1% of the quota by design (paced windows of (1000 + 5) ms x 1.001), so its ceiling is about 99.4%.`,
      `Ours per process at stop (10 partitions): ${ours.workers.map((w) => w.detail).join("; ")}.`,
      "With 20 partitions a process holding 5 may admit 5 x 25 / 10 = 12.5 units per slice, but unit costs use only 12 of them: the half unit left in each slice is never used, since a slice's room does not carry over. That costs 4% of the quota; with 10 partitions (5 units per partition per slice) every holding is a whole number of units.",
      "rate-limiter-flexible counts fixed windows (a key that expires `duration` after its first point), so two windows' worth can arrive within one sliding window; bottleneck's minTime is enforced through Redis with each client's wall clock.",
      "In-flight delay is recorder arrival minus the sender's timestamp (same host, epoch timelines), for judging the jitterMs allowance.",
    ],
    data: { quota: QUOTA, processes: PROCESSES, concurrency: CONCURRENCY, durationMs, steadyFromMs, results },
  };
}
