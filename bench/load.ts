import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync, statSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import type { Redis } from "ioredis";
import { findBinary } from "../test/support/binaries.js";
import type Bottleneck from "bottleneck";
import {
  connectRedis,
  ms,
  quantile,
  quitRedis,
  ratio,
  sleep,
  waitUntil,
  type BenchContext,
  type ScenarioResult,
  type Table,
  type Target,
} from "./common.js";
import { bottleneckCluster, redisBackend, rlfRedis, startOurs, type Quota } from "./peers.js";

// Scenarios 2 and 3: one process offers a fixed open-loop load (a request every 2 ms whether or
// not earlier ones were admitted) against a quota twice as large, and measures (2) the time from
// asking to being admitted and (3) the Redis commands sent per admitted request, seen by a MONITOR
// connection, which tells commands sent by clients from those run inside Lua scripts.

const QUOTA: Quota = { limit: 1000, intervalMs: 1000 };
const OFFERED_PER_SECOND = 500;
const PARTITIONS = 20;

interface Contender {
  readonly name: string;
  /** Resolves when one request is admitted. */
  ask(): Promise<unknown>;
  /** Extra figures to report (ours: held partitions, lease calls). */
  describe?(): string;
  close(): Promise<void>;
}

interface LoadResult {
  readonly contender: string;
  readonly offered: number;
  readonly admitted: number;
  readonly failed: number;
  readonly seconds: number;
  readonly latencyMs: { p50: number; p99: number; p999: number; max: number; mean: number };
  readonly redis: { clientCommands: number; scriptCommands: number; byCommand: Record<string, number> } | null;
  readonly note: string;
}

/**
 * Counts every command Redis runs in a time window, through `redis-cli monitor` writing to a file:
 * another process, so that counting costs this process's event loop nothing (the peers send up to
 * 40 commands per request). MONITOR marks commands run inside Lua scripts with `[db lua]`.
 */
class CommandCounter {
  private constructor(private readonly child: ChildProcess, private readonly file: string, private readonly dir: string) {}

  static async start(port: number): Promise<CommandCounter> {
    const binary = findBinary("redis-cli");
    if (!binary) throw new Error("redis-cli was not found on PATH (Debian: apt-get install redis-tools); it counts commands for the backend-load scenario");
    const dir = await mkdtemp(join(tmpdir(), "prl-bench-"));
    const file = join(dir, "monitor.log");
    const out = openSync(file, "w");
    const child = spawn(binary, ["-p", String(port), "monitor"], { stdio: ["ignore", out, "ignore"] });
    closeSync(out);
    // MONITOR answers OK once it is on.
    await waitUntil("redis-cli monitor to start", () => statSync(file).size > 0, 5_000);
    return new CommandCounter(child, file, dir);
  }

  /** Stops monitoring and counts the commands run between `fromEpochMs` and `toEpochMs`. */
  async stop(fromEpochMs: number, toEpochMs: number): Promise<{ clientCommands: number; scriptCommands: number; byCommand: Record<string, number> }> {
    const exited = new Promise<void>((resolve) => this.child.once("exit", () => resolve()));
    this.child.kill("SIGTERM");
    await exited;
    const counts = { clientCommands: 0, scriptCommands: 0, byCommand: {} as Record<string, number> };
    for (const line of (await readFile(this.file, "utf8")).split("\n")) {
      // 1700000000.123456 [0 127.0.0.1:5555] "evalsha" "..."   or   [0 lua] "get" "..."
      const m = /^(\d+\.\d+) \[\d+ ([^\]]+)\] "([^"]+)"/.exec(line);
      if (!m) continue;
      const t = Number(m[1]) * 1000;
      if (t < fromEpochMs || t > toEpochMs) continue;
      const lua = m[2] === "lua";
      const name = `${lua ? "lua:" : ""}${m[3]!.toLowerCase()}`;
      counts.byCommand[name] = (counts.byCommand[name] ?? 0) + 1;
      if (lua) counts.scriptCommands++;
      else counts.clientCommands++;
    }
    await rm(this.dir, { recursive: true, force: true });
    return counts;
  }
}

/**
 * Offers `ask` at `perSecond` for `durationMs`, open loop: arrivals are due on a fixed schedule and
 * fired as soon as the timer runs, without waiting for earlier ones. Latency is measured from the
 * call to admission (timer lateness is this harness's, not the limiter's). Waits for the last
 * admissions before resolving.
 */
async function openLoop(perSecond: number, durationMs: number, ask: () => Promise<unknown>): Promise<{ latencies: number[]; offered: number; failed: number; seconds: number }> {
  const period = 1000 / perSecond;
  const latencies: number[] = [];
  let offered = 0;
  let failed = 0;
  const pending = new Set<Promise<void>>();
  const start = performance.now();
  const total = Math.floor(durationMs / period);
  await new Promise<void>((done) => {
    const tick = () => {
      const now = performance.now();
      while (offered < total && start + offered * period <= now) {
        offered++;
        const askedAt = performance.now();
        const p = ask().then(
          () => void latencies.push(performance.now() - askedAt),
          () => void failed++,
        );
        pending.add(p);
        void p.finally(() => pending.delete(p));
      }
      if (offered >= total) return done();
      setTimeout(tick, Math.max(0, start + offered * period - performance.now()));
    };
    tick();
  });
  const seconds = (performance.now() - start) / 1000;
  await Promise.race([Promise.all(pending), sleep(10_000)]);
  return { latencies, offered, failed, seconds };
}

async function contenders(ctx: BenchContext, client: Redis): Promise<Array<() => Promise<Contender>>> {
  const prefix = `bench:${ctx.runId}:load:`;
  const url = new URL(ctx.redisUrl);
  return [
    async () => {
      // No minPartitions: ours holds what the offered demand needs (plus its 25% headroom).
      const limiter = await startOurs(`${ctx.runId}-load`, QUOTA, PARTITIONS, redisBackend(client, prefix), 0);
      let before = limiter.stats();
      return {
        name: "ours (Redis backend), acquire()",
        ask: () => limiter.acquire(),
        describe: () => {
          const s = limiter.stats();
          const d = `held ${s.heldPartitions}/${PARTITIONS} partitions; in the window: ${s.leasesAcquired - before.leasesAcquired} acquired, ${s.leasesRenewed - before.leasesRenewed} renewed, ${s.leasesReleased - before.leasesReleased} released; ${s.waited - before.waited} admissions waited`;
          before = s;
          return d;
        },
        close: () => limiter.close(),
      };
    },
    async () => {
      const rlf = rlfRedis(QUOTA, client, `${prefix}rlf`);
      return { name: "rate-limiter-flexible Redis, consume()", ask: () => rlf.consume("k"), close: async () => undefined };
    },
    async () => {
      const bn: Bottleneck = bottleneckCluster(QUOTA, `${prefix}bn`, url.hostname, Number(url.port));
      await bn.ready();
      return {
        name: "bottleneck clustered, schedule()",
        // Admission is when Bottleneck starts the job.
        ask: () => bn.schedule(() => Promise.resolve()),
        close: () => bn.disconnect(false),
      };
    },
  ];
}

/** Scenarios 2 and 3 (either or both), from one run per contender. */
export async function runLoad(ctx: BenchContext, which: { latency: boolean; backendLoad: boolean }): Promise<ScenarioResult[]> {
  const started = performance.now();
  const measureMs = which.backendLoad ? (ctx.quick ? 6_000 : 30_000) : ctx.quick ? 6_000 : 10_000;
  const warmMs = 2_000;
  const client = await connectRedis(ctx.redisUrl);
  const results: LoadResult[] = [];
  try {
    for (const make of await contenders(ctx, client)) {
      const c = await make();
      ctx.log(`  ${c.name}: ${warmMs} ms warm-up, ${measureMs} ms measured`);
      await openLoop(OFFERED_PER_SECOND, warmMs, c.ask);
      c.describe?.();
      const counter = which.backendLoad ? await CommandCounter.start(ctx.redisPort) : null;
      const from = Date.now();
      const run = await openLoop(OFFERED_PER_SECOND, measureMs, c.ask);
      const redis = counter ? await counter.stop(from, Date.now()) : null;
      const note = c.describe?.() ?? "";
      await c.close();
      const sorted = run.latencies.slice().sort((a, b) => a - b);
      const result: LoadResult = {
        contender: c.name,
        offered: run.offered,
        admitted: run.latencies.length,
        failed: run.failed,
        seconds: run.seconds,
        latencyMs: {
          p50: quantile(sorted, 0.5),
          p99: quantile(sorted, 0.99),
          p999: quantile(sorted, 0.999),
          max: sorted[sorted.length - 1] ?? NaN,
          mean: sorted.reduce((a, b) => a + b, 0) / Math.max(1, sorted.length),
        },
        redis,
        note,
      };
      results.push(result);
      ctx.log(`    p50 ${ms(result.latencyMs.p50)} p99 ${ms(result.latencyMs.p99)} ms; ${redis ? `${redis.clientCommands} client + ${redis.scriptCommands} in-script commands for ${result.admitted} admitted` : ""} ${note}`);
    }
  } finally {
    await quitRedis(client);
  }
  const seconds = (performance.now() - started) / 1000;
  const ours = results[0]!;
  const peers = results.slice(1);
  const out: ScenarioResult[] = [];
  const common = `${OFFERED_PER_SECOND} req/s offered open-loop (one every ${1000 / OFFERED_PER_SECOND} ms) against a quota of ${QUOTA.limit}/${QUOTA.intervalMs} ms, one process, ${measureMs / 1000} s measured after ${warmMs / 1000} s warm-up`;
  if (which.latency) {
    const fastestPeerP99 = Math.min(...peers.map((p) => p.latencyMs.p99));
    const table: Table = {
      title: `Admission latency in ms, from the call to admission; ${common}`,
      headers: ["contender", "admitted", "p50", "p99", "p99.9", "max", "p99 ours / this"],
      rows: results.map((r) => [
        r.contender,
        `${r.admitted}/${r.offered}${r.failed ? ` (${r.failed} failed)` : ""}`,
        ms(r.latencyMs.p50),
        ms(r.latencyMs.p99),
        ms(r.latencyMs.p999),
        ms(r.latencyMs.max),
        r === ours ? "" : ratio(ours.latencyMs.p99, r.latencyMs.p99),
      ]),
    };
    const targets: Target[] = [
      { what: "ours p99 admission latency", goal: "< 0.1 ms", measured: `${ms(ours.latencyMs.p99)} ms`, met: ours.latencyMs.p99 < 0.1 },
    ];
    out.push({
      name: "latency",
      title: "2. Admission latency at a fixed offered load",
      seconds: which.backendLoad ? seconds / 2 : seconds,
      tables: [table],
      targets,
      notes: [
        `Ours: ${ours.note}.`,
        `Fastest peer p99: ${ms(fastestPeerP99)} ms. Peers pay a Redis round trip (or several) per request; ours decides in memory.`,
      ],
      data: { quota: QUOTA, offeredPerSecond: OFFERED_PER_SECOND, measureMs, warmMs, results: results.map(({ redis: _r, ...rest }) => rest) },
    });
  }
  if (which.backendLoad) {
    const perAdmitted = (r: LoadResult, n: number) => n / Math.max(1, r.admitted);
    const oursClient = perAdmitted(ours, ours.redis!.clientCommands);
    const oursAll = perAdmitted(ours, ours.redis!.clientCommands + ours.redis!.scriptCommands);
    const topCommands = (r: LoadResult) =>
      Object.entries(r.redis!.byCommand)
        .sort((a, b) => b[1] - a[1])
        .slice(0, 4)
        .map(([name, n]) => `${name} ${n}`)
        .join(", ");
    const table: Table = {
      title: `Redis commands per admitted request, counted by \`redis-cli monitor\` over the measured window; ${common}`,
      headers: ["contender", "admitted", "commands sent by clients", "per admitted", "incl. commands inside Lua", "per admitted", "ours / this (incl. Lua)", "most frequent"],
      rows: results.map((r) => {
        const all = r.redis!.clientCommands + r.redis!.scriptCommands;
        return [
          r.contender,
          String(r.admitted),
          String(r.redis!.clientCommands),
          perAdmitted(r, r.redis!.clientCommands).toFixed(4),
          String(all),
          perAdmitted(r, all).toFixed(4),
          r === ours ? "" : ratio(oursAll, perAdmitted(r, all)),
          topCommands(r),
        ];
      }),
    };
    out.push({
      name: "backend-load",
      title: "3. Backend load",
      seconds: which.latency ? seconds / 2 : seconds,
      tables: [table],
      targets: [
        { what: "ours Redis commands sent per admitted request", goal: "<= 0.01", measured: oursClient.toFixed(4), met: oursClient <= 0.01 },
        { what: "ours Redis commands per admitted request, counting those run inside Lua scripts", goal: "<= 0.01", measured: oursAll.toFixed(4), met: oursAll <= 0.01 },
      ],
      notes: [
        `Ours: ${ours.note}. Its Redis traffic is lease renewals (one EVALSHA per held partition every leaseTtlMs/3 = 5 s; each runs GET + PEXPIRE inside), independent of the request rate: at 10x the load the per-request figure falls about 10x.`,
      ],
      data: { quota: QUOTA, offeredPerSecond: OFFERED_PER_SECOND, measureMs, results: results.map((r) => ({ contender: r.contender, admitted: r.admitted, redis: r.redis, note: r.note })) },
    });
  }
  return out;
}
