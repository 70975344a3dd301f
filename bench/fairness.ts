import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";
import { auditSlidingWindows } from "../test/support/audit.js";
import { jainIndex } from "../test/support/fleet.js";
import { precreatePlan } from "../test/support/precreate-plan.js";
import { startRecorder, type Arrival } from "../test/support/recorder.js";
import { connectRedis, ms, pct, quitRedis, ratio, sleep, type BenchContext, type ScenarioResult } from "./common.js";
import { redisBackend, type Quota } from "./peers.js";
import { BENCH_WORKER_ENV, type BenchWorkerConfig, type BenchWorkerMessage, type BenchWorkerStats } from "./worker-protocol.js";

// Scenario 6 (the fair-share issue): three processes saturate one quota; a fourth joins late.
// How long until the late joiner gets its fair share (a quarter), and how much of the next 10 s
// of admissions it gets, for ours and for the peers, each driven by bench/worker.ts through the
// same request path, every request timed by one recorder.

const QUOTA: Quota = { limit: 200, intervalMs: 1000 };
const PARTITIONS = 20;
const PROCESSES = 4;
const CONCURRENCY = 16;
/** The joiner's rate over the trailing interval must reach this much of its fair rate. */
const REACHED = 0.9;

interface FairnessResult {
  readonly contender: string;
  /** From the joiner's start to the end of the first trailing interval with ≥ 90% of its fair rate; null if never. */
  readonly joinToShareMs: number | null;
  /** From the joiner's start to its first admission (arrival). */
  readonly firstAdmissionMs: number | null;
  /** Joiner's units ÷ all units in the 10 s after its start. */
  readonly joinerShare: number;
  /** Jain's index over the four processes' units in the last `measureMs` of the run. */
  readonly jainLast: number;
  /** Units per process in the 10 s after the join, in worker order (the joiner last). */
  readonly perWorker: number[];
  readonly overLimitWindows: number;
  readonly worstRatio: number;
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

async function runOne(ctx: BenchContext, kind: BenchWorkerConfig["kind"], label: string, joinAtMs: number, measureMs: number): Promise<FairnessResult> {
  const name = `${ctx.runId}-fair-${kind}`;
  if (kind === "ours") {
    const client = await connectRedis(ctx.redisUrl);
    await precreatePlan(redisBackend(client, `bench:${name}:`), name, { ...QUOTA, partitions: PARTITIONS });
    await quitRedis(client);
  }
  const recorder = await startRecorder();
  const workers = Array.from({ length: PROCESSES }, (_, i) =>
    startWorker({ id: `w${i}`, kind, redisUrl: ctx.redisUrl, name, quota: QUOTA, partitions: PARTITIONS, concurrency: CONCURRENCY, targetUrl: recorder.url }),
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
    for (const w of workers.slice(0, -1)) w.child.send({ type: "start" });
    await sleep(t0 + joinAtMs - recorder.now());
    const joinedAt = recorder.now();
    workers.at(-1)!.child.send({ type: "start" });
    await sleep(joinedAt + measureMs - recorder.now());
    for (const w of workers) w.child.send({ type: "stop" });
    const stats = await Promise.race([Promise.all(workers.map((w) => w.stopped)), sleep(20_000).then(() => [] as (BenchWorkerStats | null)[])]);
    const arrivals: Arrival[] = recorder.arrivals().sort((a, b) => a.t - b.t);
    const audit = auditSlidingWindows(arrivals.map((a) => ({ t: a.t, units: a.cost })), QUOTA.limit, QUOTA.intervalMs);
    const joiner = `w${PROCESSES - 1}`;
    const after = arrivals.filter((a) => a.t >= joinedAt && a.t < joinedAt + measureMs);
    const perWorker = Array.from({ length: PROCESSES }, (_, i) => after.filter((a) => a.worker === `w${i}`).reduce((s, a) => s + a.cost, 0));
    const total = perWorker.reduce((s, x) => s + x, 0);
    const mine = after.filter((a) => a.worker === joiner);
    const fairPerInterval = QUOTA.limit / PROCESSES;
    // The end of the first trailing interval in which the joiner got ≥ 90% of a fair rate.
    let joinToShareMs: number | null = null;
    for (let head = 0, tail = 0, units = 0; tail < mine.length; tail++) {
      units += mine[tail]!.cost;
      while (mine[head]!.t <= mine[tail]!.t - QUOTA.intervalMs) units -= mine[head++]!.cost;
      if (units >= REACHED * fairPerInterval) {
        joinToShareMs = Math.max(mine[tail]!.t - joinedAt, QUOTA.intervalMs);
        break;
      }
    }
    const lastFrom = joinedAt + measureMs - Math.min(measureMs, 5_000);
    const last = Array.from({ length: PROCESSES }, (_, i) => after.filter((a) => a.worker === `w${i}` && a.t >= lastFrom).reduce((s, a) => s + a.cost, 0));
    return {
      contender: label,
      joinToShareMs,
      firstAdmissionMs: mine[0] ? mine[0].t - joinedAt : null,
      joinerShare: total === 0 ? 0 : perWorker.at(-1)! / total,
      jainLast: jainIndex(last),
      perWorker,
      overLimitWindows: audit.overLimitWindows,
      worstRatio: audit.worstRatio,
      workers: stats.filter((s): s is BenchWorkerStats => s !== null),
    };
  } finally {
    for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill("SIGKILL");
    await recorder.stop();
  }
}

/** Scenario 6: a late joiner's time to its fair share and its share of the next 10 s. */
export async function runFairness(ctx: BenchContext): Promise<ScenarioResult> {
  const started = performance.now();
  const joinAtMs = ctx.quick ? 4_000 : 8_000;
  const measureMs = ctx.quick ? 6_000 : 10_000;
  const contenders: Array<[BenchWorkerConfig["kind"], string]> = [
    ["ours", `ours (Redis backend), acquire(), ${PARTITIONS} partitions, TTL 15 s`],
    ["rlf-redis", "rate-limiter-flexible RateLimiterRedis (one shared key) + RateLimiterQueue"],
    ["bottleneck-cluster", "bottleneck clustered (Redis)"],
  ];
  const results: FairnessResult[] = [];
  for (const [kind, label] of contenders) {
    ctx.log(`  ${label}: ${PROCESSES - 1} processes from 0 s, the ${PROCESSES}th at ${joinAtMs / 1000} s, ${measureMs / 1000} s measured`);
    const r = await runOne(ctx, kind, label, joinAtMs, measureMs);
    ctx.log(`    joiner: fair share ${r.joinToShareMs === null ? "never" : `after ${ms(r.joinToShareMs)} ms`}, ${pct(r.joinerShare)} of the next ${measureMs / 1000} s; ${r.overLimitWindows} windows over`);
    results.push(r);
  }
  const ours = results[0]!;
  const fair = 1 / PROCESSES;
  const time = (x: number | null) => (x === null ? `never (> ${measureMs} ms)` : `${ms(x)} ms`);
  return {
    name: "fairness",
    title: `6. Fairness to a late joiner (${PROCESSES - 1} saturated processes, a ${PROCESSES}th joins)`,
    seconds: (performance.now() - started) / 1000,
    tables: [
      {
        title:
          `${PROCESSES - 1} processes x ${CONCURRENCY} loops of "wait for admission, then GET the recorder" share ${QUOTA.limit} per ${QUOTA.intervalMs} ms; ` +
          `a ${PROCESSES}th, the same, joins at ${joinAtMs / 1000} s. Join to fair share = until its arrivals in a trailing ${QUOTA.intervalMs} ms first reach ${pct(REACHED, 0)} of ` +
          `${fairPerIntervalText()}; share = its arrivals / all arrivals in the ${measureMs / 1000} s after it joined (fair: ${pct(fair, 0)}); ratios are ours ÷ peer (time above 1: ours slower; share below 1: ours smaller)`,
        headers: ["contender", "first admission", "join to fair share", "joiner's share of the next 10 s", "units per process (joiner last)", "Jain, last 5 s", "windows over limit", "worst window", "ours: time ÷ peer's", "ours: share ÷ peer's"],
        rows: results.map((r) => [
          r.contender,
          r.firstAdmissionMs === null ? "never" : `${ms(r.firstAdmissionMs)} ms`,
          time(r.joinToShareMs),
          pct(r.joinerShare),
          r.perWorker.join(" / "),
          r.jainLast.toFixed(4),
          String(r.overLimitWindows),
          `${r.worstRatio.toFixed(3)}x`,
          r === ours ? "-" : ratio(ours.joinToShareMs ?? Infinity, r.joinToShareMs ?? measureMs),
          r === ours ? "-" : ratio(ours.joinerShare, r.joinerShare),
        ]),
      },
    ],
    targets: [
      { what: "ours: joiner at its fair share within one TTL plus one second", goal: "<= 16000 ms", measured: time(ours.joinToShareMs), met: ours.joinToShareMs !== null && ours.joinToShareMs <= 16_000 },
      { what: "ours windows over the limit", goal: "0", measured: String(ours.overLimitWindows), met: ours.overLimitWindows === 0 },
    ],
    notes: [
      `Ours: the joiner publishes that it wants more at its first heartbeat; each incumbent sees it at its own next heartbeat (every leaseTtlMs / 3 = 5 s) and hands its excess back through the quiet gap of docs/guarantee.md (H1), so the time to share is bounded by one renew period plus a slice, not by the TTL.`,
      "Ours admits nothing for the joiner until an incumbent gives a partition back, so its first admission waits for the incumbents' next heartbeat too; the peers admit a joiner at once, and in this run both peers let more than the limit into some windows (see \"windows over limit\").",
      "rate-limiter-flexible: every process polls one fixed-window key; a newcomer competes for the points left in each window, so its share depends on how often its queue retries, not on a fair-share rule.",
      "bottleneck clustered: one minTime schedule in Redis; each process's queue asks for the next slot, so the joiner's share depends on the order in which its requests reach Redis.",
      `"never" in the time ratio is counted as the whole ${measureMs / 1000} s for the peer.`,
      `Ours per process at stop: ${ours.workers.map((w) => w.detail).join("; ")}.`,
    ],
    data: { quota: QUOTA, partitions: PARTITIONS, processes: PROCESSES, concurrency: CONCURRENCY, joinAtMs, measureMs, results },
  };
}

function fairPerIntervalText(): string {
  return `${QUOTA.limit / PROCESSES} units (limit / ${PROCESSES})`;
}
