import { performance } from "node:perf_hooks";
import { connectRedis, perSecond, quitRedis, ratio, type BenchContext, type ScenarioResult } from "./common.js";
import {
  bottleneckCluster,
  bottleneckLocal,
  memoryBackend,
  pThrottled,
  redisBackend,
  rlfMemory,
  rlfRedis,
  startOurs,
  type Quota,
} from "./peers.js";

// Scenario 1: admission decisions per second on one core (this process's event loop) while the
// quota is nowhere near used up, so every decision is "yes" and only the cost of deciding counts.

/** A quota that the measurement can never exhaust: 1e9 per second. */
const QUOTA: Quota = { limit: 1e9, intervalMs: 1000 };
const PARTITIONS = 10;
/** Calls kept in flight for promise-based APIs, so a round trip per call does not idle the loop. */
const LANES = 256;

interface Measured {
  readonly contender: string;
  readonly api: string;
  readonly distributed: boolean;
  readonly perSecond: number;
  readonly decisions: number;
  readonly refused: number;
}

/** Calls a synchronous decision in a tight loop for `durationMs`; reads the clock every 1024 calls. */
function syncLoop(decide: () => boolean, durationMs: number): { decisions: number; refused: number; seconds: number } {
  let decisions = 0;
  let refused = 0;
  const start = performance.now();
  const end = start + durationMs;
  let now = start;
  while (now < end) {
    for (let i = 0; i < 1024; i++) if (!decide()) refused++;
    decisions += 1024;
    now = performance.now();
  }
  return { decisions, refused, seconds: (now - start) / 1000 };
}

/** Runs `lanes` loops of `await decide()` for `durationMs`. A rejection counts as refused. */
async function asyncLoop(decide: () => Promise<unknown>, durationMs: number, lanes = LANES): Promise<{ decisions: number; refused: number; seconds: number }> {
  let decisions = 0;
  let refused = 0;
  const start = performance.now();
  const end = start + durationMs;
  const lane = async () => {
    while (performance.now() < end) {
      try {
        await decide();
      } catch {
        refused++;
      }
      decisions++;
    }
  };
  await Promise.all(Array.from({ length: lanes }, lane));
  return { decisions, refused, seconds: (performance.now() - start) / 1000 };
}

/** Scenario 1. */
export async function runThroughput(ctx: BenchContext): Promise<ScenarioResult> {
  const started = performance.now();
  const durationMs = ctx.quick ? 500 : 2_000;
  const warmMs = ctx.quick ? 100 : 300;
  const results: Measured[] = [];
  const client = await connectRedis(ctx.redisUrl);
  const prefix = `bench:${ctx.runId}:tp:`;

  const measureSync = (contender: string, api: string, distributed: boolean, decide: () => boolean) => {
    syncLoop(decide, warmMs); // let the JIT settle
    const r = syncLoop(decide, durationMs);
    results.push({ contender, api, distributed, perSecond: r.decisions / r.seconds, decisions: r.decisions, refused: r.refused });
    ctx.log(`  ${contender} ${api}: ${perSecond(r.decisions / r.seconds)}/s`);
  };
  const measureAsync = async (contender: string, api: string, distributed: boolean, decide: () => Promise<unknown>) => {
    await asyncLoop(decide, warmMs);
    const r = await asyncLoop(decide, durationMs);
    results.push({ contender, api, distributed, perSecond: r.decisions / r.seconds, decisions: r.decisions, refused: r.refused });
    ctx.log(`  ${contender} ${api}: ${perSecond(r.decisions / r.seconds)}/s`);
  };

  try {
    {
      const limiter = await startOurs(`${ctx.runId}-tp-mem`, QUOTA, PARTITIONS, memoryBackend());
      measureSync("ours (memory backend)", "tryAcquire()", false, () => limiter.tryAcquire());
      await measureAsync("ours (memory backend)", `await acquire() x${LANES}`, false, () => limiter.acquire());
      await limiter.close();
    }
    {
      const limiter = await startOurs(`${ctx.runId}-tp-redis`, QUOTA, PARTITIONS, redisBackend(client, prefix));
      measureSync("ours (Redis backend)", "tryAcquire()", true, () => limiter.tryAcquire());
      await measureAsync("ours (Redis backend)", `await acquire() x${LANES}`, true, () => limiter.acquire());
      await limiter.close();
    }
    {
      const rlf = rlfMemory(QUOTA);
      await measureAsync("rate-limiter-flexible Memory", `await consume() x${LANES}`, false, () => rlf.consume("k"));
    }
    {
      const throttled = await pThrottled(QUOTA);
      await measureAsync("p-throttle", `await throttled() x${LANES}`, false, () => throttled());
    }
    {
      const bn = bottleneckLocal(QUOTA);
      await measureAsync("bottleneck local", `await schedule() x${LANES}`, false, () => bn.schedule(() => Promise.resolve()));
      await bn.stop({ dropWaitingJobs: false });
    }
    {
      const rlf = rlfRedis(QUOTA, client, `${prefix}rlf`);
      await measureAsync("rate-limiter-flexible Redis", `await consume() x${LANES}`, true, () => rlf.consume("k"));
    }
    {
      const url = new URL(ctx.redisUrl);
      const bn = bottleneckCluster(QUOTA, `${prefix}bn`, url.hostname, Number(url.port));
      await bn.ready();
      await measureAsync("bottleneck clustered (ioredis)", `await schedule() x${LANES}`, true, () => bn.schedule(() => Promise.resolve()));
      await bn.disconnect(false);
    }
  } finally {
    await quitRedis(client);
  }

  const oursSync = results.filter((r) => r.contender.startsWith("ours") && r.api === "tryAcquire()");
  const oursBest = Math.min(...oursSync.map((r) => r.perSecond));
  const peers = results.filter((r) => !r.contender.startsWith("ours"));
  const distributedPeers = peers.filter((r) => r.distributed);
  const fastestDistributed = distributedPeers.reduce((a, b) => (b.perSecond > a.perSecond ? b : a));
  const fastestPeer = peers.reduce((a, b) => (b.perSecond > a.perSecond ? b : a));
  const rows = results.map((r) => [
    r.contender,
    r.api,
    r.distributed ? "yes" : "no",
    perSecond(r.perSecond),
    r.contender.startsWith("ours") ? ratio(r.perSecond, fastestDistributed.perSecond) : "",
    r.contender.startsWith("ours") ? "" : ratio(oursBest, r.perSecond),
    r.refused === 0 ? "0" : String(r.refused),
  ]);
  return {
    name: "throughput",
    title: "1. Local decision throughput (one core, capacity available)",
    seconds: (performance.now() - started) / 1000,
    tables: [
      {
        title: `Decisions per second with a quota of 1e9 per second (never exhausted), ${durationMs} ms per row after ${warmMs} ms warm-up; promise APIs keep ${LANES} calls in flight`,
        headers: ["contender", "API", "shared across processes", "decisions/s", "ours / fastest distributed peer", "ours tryAcquire (slower backend) / this", "refused"],
        rows,
      },
    ],
    targets: [
      { what: "ours tryAcquire decisions/s (slower of memory and Redis backends)", goal: ">= 1,000,000/s", measured: `${perSecond(oursBest)}/s`, met: oursBest >= 1e6 },
      {
        what: `ours tryAcquire vs fastest distributed peer (${fastestDistributed.contender})`,
        goal: ">= 10x",
        measured: ratio(oursBest, fastestDistributed.perSecond),
        met: oursBest >= 10 * fastestDistributed.perSecond,
      },
    ],
    notes: [
      `Fastest peer overall: ${fastestPeer.contender} at ${perSecond(fastestPeer.perSecond)}/s (local only, not shared across processes).`,
      "bottleneck (local and clustered) runs each job through serialised steps that yield with setTimeout(0) (LocalDatastore.yieldLoop) or a Redis round trip, so it tops out near 1,000 jobs/s per limiter locally whatever the settings (minTime 0 or a reservoir give the same).",
      "Ours decides in memory with either backend; the backend is only called for leases (none during the measurement: all partitions were already held).",
    ],
    data: { quota: QUOTA, partitions: PARTITIONS, durationMs, lanes: LANES, results },
  };
}
