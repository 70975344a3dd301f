/**
 * `npm run bench` (issue #7): partitioned-rate-limiter side by side with rate-limiter-flexible,
 * bottleneck and p-throttle, all against one redis-server that this script starts on a free
 * loopback port and stops at the end.
 *
 *   npm run bench                      all scenarios: under 5 minutes, plus about 65 s for fairness
 *   npm run bench -- --quick           a ~1 minute smoke run (shorter phases, smaller grid)
 *   npm run bench -- --only latency    one scenario (repeatable, or comma-separated)
 *   npm run bench -- --json            one JSON object on stdout instead of markdown
 *
 * Scenarios: throughput, latency, backend-load, accuracy, scale, fairness. `latency` and `backend-load`
 * share one run at the same offered load when both are selected.
 */
import { randomBytes } from "node:crypto";
import { cpus, loadavg, totalmem } from "node:os";
import { performance } from "node:perf_hooks";
import { oneOf, readCommandLine, UsageError, type OptionSpecs } from "../src/cli/args.js";
import { startRedis } from "../test/support/servers/redis.js";
import { markdownTable, type BenchContext, type ScenarioResult } from "./common.js";
import { runAccuracy } from "./accuracy.js";
import { runFairness } from "./fairness.js";
import { runLoad } from "./load.js";
import { PEER_CONFIG } from "./peers.js";
import { runScale } from "./scale.js";
import { runThroughput } from "./throughput.js";

const SCENARIOS = ["throughput", "latency", "backend-load", "accuracy", "scale", "fairness"] as const;
type Scenario = (typeof SCENARIOS)[number];

interface Args {
  quick: boolean;
  json: boolean;
  only: Set<Scenario>;
}

const BENCH_OPTIONS = {
  quick: { type: "boolean", help: "a ~1 minute smoke run" },
  json: { type: "boolean", help: "one JSON object on stdout" },
  only: { type: "string", repeatable: true, value: "<scenario[,scenario]>", help: "run only these scenarios" },
  help: { type: "boolean", short: "h", help: "the usage line" },
} as const satisfies OptionSpecs;

function parseBenchArgs(argv: readonly string[]): Args | "help" {
  const line = readCommandLine(argv, BENCH_OPTIONS, "npm run bench");
  if (line.flag("help")) return "help";
  if (line.positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(line.positionals[0])} (try --help)`);
  const only = new Set<Scenario>();
  for (const value of line.strings("only")) {
    for (const name of value.split(",")) only.add(oneOf("only", name.trim(), SCENARIOS));
  }
  if (only.size === 0) for (const s of SCENARIOS) only.add(s);
  return { quick: line.flag("quick"), json: line.flag("json"), only };
}

const USAGE = `usage: npm run bench -- [--quick] [--json] [--only ${SCENARIOS.join("|")}]`;

function machine(): Record<string, string | number> {
  const cpu = cpus();
  return {
    cpu: cpu[0]?.model ?? "unknown",
    cores: cpu.length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    // The machine may be shared: a busy neighbour shows up in tail latencies, so say how busy it was.
    loadAverage1m: Number(loadavg()[0]!.toFixed(2)),
  };
}

function render(results: readonly ScenarioResult[], info: Record<string, unknown>): string {
  const out: string[] = [];
  out.push(`# partitioned-rate-limiter benchmark${info.quick ? " (--quick)" : ""}`);
  out.push("");
  const m = info.machine as Record<string, unknown>;
  out.push(`Machine: ${String(m.cpu)}, ${String(m.cores)} cores, ${String(m.memoryGiB)} GiB, Node ${String(m.node)}, ${String(m.platform)}; ${String(info.redis)} on loopback. Total ${Number(info.totalSeconds).toFixed(0)} s. Load average (1 min) ${String(m.loadAverage1mAtStart)} at start, ${String(m.loadAverage1m)} at the end (other work on this machine competes for its cores).`);
  for (const r of results) {
    out.push("", `## ${r.title}`, "");
    for (const table of r.tables) out.push(`${table.title}`, "", markdownTable(table), "");
    if (r.targets.length > 0) {
      out.push(markdownTable({ title: "", headers: ["target", "goal", "measured", "met"], rows: r.targets.map((t) => [t.what, t.goal, t.measured, t.met ? "yes" : "**no**"]) }), "");
    }
    for (const note of r.notes) out.push(`- ${note}`);
    out.push(`- (${r.seconds.toFixed(0)} s)`);
  }
  out.push("", "## How each contender is configured", "");
  for (const [name, config] of Object.entries(PEER_CONFIG)) out.push(`- **${name}**: ${config}`);
  return out.join("\n") + "\n";
}

async function main(): Promise<void> {
  let parsed: Args | "help";
  try {
    parsed = parseBenchArgs(process.argv.slice(2));
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`${error.message}\n${USAGE}\n`);
    process.exit(2);
  }
  if (parsed === "help") {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const args = parsed;
  const started = performance.now();
  const startLoad = loadavg()[0]!;
  const log = (message: string) => process.stderr.write(`[bench ${((performance.now() - started) / 1000).toFixed(1)}s] ${message}\n`);
  const needsRedis = [...args.only].some((s) => s !== "scale");
  const redis = needsRedis ? await startRedis() : null;
  const stop = async () => {
    await redis?.stop();
  };
  process.once("SIGINT", () => void stop().finally(() => process.exit(130)));
  const results: ScenarioResult[] = [];
  let redisVersion = "no Redis needed";
  try {
    const ctx: BenchContext = {
      quick: args.quick,
      redisUrl: redis?.url ?? "",
      redisPort: redis?.port ?? 0,
      runId: randomBytes(3).toString("hex"),
      log,
    };
    if (redis) {
      const { connectRedis, quitRedis } = await import("./common.js");
      const client = await connectRedis(redis.url);
      const info = await client.info("server");
      redisVersion = `redis-server ${/redis_version:(\S+)/.exec(info)?.[1] ?? "?"}`;
      await quitRedis(client);
    }
    log(`${redisVersion}${redis ? ` at ${redis.url}` : ""}; scenarios: ${[...args.only].join(", ")}${args.quick ? " (quick)" : ""}`);
    if (args.only.has("throughput")) {
      log("scenario 1: throughput");
      results.push(await runThroughput(ctx));
    }
    if (args.only.has("latency") || args.only.has("backend-load")) {
      log("scenarios 2-3: latency and backend load at a fixed offered load");
      results.push(...(await runLoad(ctx, { latency: args.only.has("latency"), backendLoad: args.only.has("backend-load") })));
    }
    if (args.only.has("accuracy")) {
      log("scenario 4: accuracy under sharing (4 processes)");
      results.push(await runAccuracy(ctx));
    }
    if (args.only.has("scale")) {
      log("scenario 5: coordination scale on virtual time");
      results.push(await runScale(ctx));
    }
    if (args.only.has("fairness")) {
      log("scenario 6: fairness to a late joiner (4 processes)");
      results.push(await runFairness(ctx));
    }
  } finally {
    await stop();
  }
  const info = { quick: args.quick, machine: { ...machine(), loadAverage1mAtStart: Number(startLoad.toFixed(2)) }, redis: redisVersion, totalSeconds: (performance.now() - started) / 1000 };
  if (args.json) process.stdout.write(JSON.stringify({ ...info, scenarios: results }, null, 2) + "\n");
  else process.stdout.write(render(results, info));
}

main().then(
  // Peers' clients may keep sockets or timers; the bench is done.
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
