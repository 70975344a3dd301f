/**
 * Every TypeScript block of the README is a file under examples/ (scripts/sync-readme-examples.mjs
 * copies the files into the README; test/unit/readme-examples-sync.test.ts fails when they
 * differ). This test type-checks the files with tsc and runs each one as its own process, as a
 * reader would, against real servers: each must exit 0 by itself within EXAMPLE_BOUND_MS, with
 * nothing on stderr. A process still alive at the bound is killed and fails its test.
 *
 * The examples import only "partitioned-rate-limiter" (and its subpaths): examples/tsconfig.json
 * maps each entry of package.json `exports` to its source file, for tsc and for tsx
 * (TSX_TSCONFIG_PATH), so no build is needed and nothing unexported can be imported.
 *
 * Servers are started for the addresses an example reads: REDIS_URL, REDLOCK_URLS,
 * REDIS_CLUSTER_NODES, REDIS_SENTINELS (and REDIS_SENTINEL_NAME), ZOOKEEPER_CONNECT, ETCD_ENDPOINTS,
 * AZURE_STORAGE_CONNECTION_STRING (or taken from the environment, see test/support/servers).
 */
import { execFile, execFileSync, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { BlobServiceClient } from "@azure/storage-blob";
import { Etcd3 } from "etcd3";
import { validatePlan } from "../../src/contract/plan.js";
import { AzureBlobLeaseBackend } from "../../src/lease-backends/azure-blob.js";
import { EtcdLeaseBackend } from "../../src/lease-backends/etcd.js";
import { startAzurite, type AzuriteServer } from "../support/servers/azurite.js";
import { startEtcd, type EtcdServer } from "../support/servers/etcd.js";
import { startRedis, startRedisTrio, type RedisServer } from "../support/servers/redis.js";
import { startZooKeeper, type ZooKeeperServer } from "../support/servers/zookeeper.js";
import { startRedisCluster, type RedisCluster } from "../support/servers/redis-cluster.js";
import { startRedisSentinel, type RedisSentinelGroup } from "../support/servers/redis-sentinel.js";

const ROOT = resolve(__dirname, "..", "..");
/** How long one example may run, start-up included. The slowest (ZooKeeper) waits a new resource's creation grace, about 61 s. */
const EXAMPLE_BOUND_MS = 100_000;
/**
 * A backend that cannot prove its history waits out the longest lease plus a window before a new
 * resource's first grant (docs/guarantee.md, G1): about 61 s on a server that has just started.
 * A reader runs the examples against a server that has been up for a while, so the servers here
 * are first used (etcd's server clock and Azure's witness are made) and then left running this
 * long before the examples start; a server that has run that long proves it forgot nothing.
 */
const SERVERS_SETTLED_MS = 63_000;
/** Examples run at once: most of their time is a grace period, not CPU. */
const CONCURRENCY = 3;

const examples = JSON.parse(execFileSync(process.execPath, ["scripts/sync-readme-examples.mjs", "--list"], { cwd: ROOT, encoding: "utf8" })) as string[];
const sources = new Map(examples.map((file) => [file, readFileSync(join(ROOT, file), "utf8")]));
const reads = (name: string) => [...sources.values()].some((source) => source.includes(`process.env.${name}`));

interface Run {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
  readonly killed: boolean;
}

const servers: { stop(): Promise<void> }[] = [];
const env: Record<string, string> = { TSX_TSCONFIG_PATH: join(ROOT, "examples", "tsconfig.json") };
const runs = new Map<string, Promise<Run>>();

/** Runs one example with tsx, killing it at the bound. */
function runExample(file: string): Promise<Run> {
  return new Promise((resolveRun) => {
    const started = performance.now();
    const child = spawn(process.execPath, ["--import", "tsx", file], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      child.kill("SIGKILL");
    }, EXAMPLE_BOUND_MS);
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      resolveRun({ code, signal, stdout, stderr, ms: performance.now() - started, killed });
    });
  });
}

/** Starts every run, at most CONCURRENCY at a time, in README order. */
function startRuns(): void {
  let next = 0;
  const waiting = examples.map(() => {
    let start!: () => void;
    const turn = new Promise<void>((r) => (start = r));
    return { turn, start };
  });
  const launchNext = () => {
    const index = next++;
    if (index < examples.length) waiting[index]!.start();
  };
  examples.forEach((file, i) => {
    const run = waiting[i]!.turn.then(() => runExample(file));
    runs.set(file, run);
    void run.finally(launchNext);
  });
  for (let i = 0; i < CONCURRENCY; i++) launchNext();
}

let serversStartedAt = 0;

beforeAll(async () => {
  serversStartedAt = performance.now();
  const started: Promise<void>[] = [];
  if (reads("REDIS_URL")) {
    started.push(startRedis().then((redis: RedisServer) => {
      servers.push(redis);
      env.REDIS_URL = redis.url;
    }));
  }
  if (reads("REDLOCK_URLS")) {
    started.push(startRedisTrio().then((trio: RedisServer[]) => {
      servers.push(...trio);
      env.REDLOCK_URLS = trio.map((r) => r.url).join(",");
    }));
  }
  if (reads("REDIS_CLUSTER_NODES")) {
    started.push(startRedisCluster().then((cluster: RedisCluster) => {
      servers.push(cluster);
      env.REDIS_CLUSTER_NODES = cluster.nodes.map((n) => `${n.host}:${n.port}`).join(",");
    }));
  }
  if (reads("REDIS_SENTINELS")) {
    started.push(startRedisSentinel().then((group: RedisSentinelGroup) => {
      servers.push(group);
      env.REDIS_SENTINELS = group.sentinels.map((n) => `${n.host}:${n.port}`).join(",");
      env.REDIS_SENTINEL_NAME = group.name;
    }));
  }
  if (reads("ZOOKEEPER_CONNECT")) {
    started.push(startZooKeeper().then((zookeeper: ZooKeeperServer) => {
      servers.push(zookeeper);
      env.ZOOKEEPER_CONNECT = zookeeper.connectString;
    }));
  }
  if (reads("ETCD_ENDPOINTS")) {
    started.push(startEtcd().then((etcd: EtcdServer) => {
      servers.push(etcd);
      env.ETCD_ENDPOINTS = etcd.endpoint;
    }));
  }
  if (reads("AZURE_STORAGE_CONNECTION_STRING")) {
    started.push(startAzurite().then((azurite: AzuriteServer) => {
      servers.push(azurite);
      env.AZURE_STORAGE_CONNECTION_STRING = azurite.connectionString;
    }));
  }
  await Promise.all(started);
  await firstUse();
  const settle = SERVERS_SETTLED_MS - (performance.now() - serversStartedAt);
  if (settle > 0) await new Promise((r) => setTimeout(r, settle));
}, 90_000 + SERVERS_SETTLED_MS);

/** The first use of etcd and Azurite by a backend, as by any earlier process: starts their server clock and witness. */
async function firstUse(): Promise<void> {
  const plan = { limit: 1, intervalMs: 1000, partitions: 1 };
  if (env.ETCD_ENDPOINTS) {
    const client = new Etcd3({ hosts: env.ETCD_ENDPOINTS.split(",") });
    const backend = new EtcdLeaseBackend({ client });
    await backend.ensurePlan("first-use", validatePlan(plan), { timeoutMs: 10_000 });
    await backend.close();
    client.close();
  }
  if (env.AZURE_STORAGE_CONNECTION_STRING) {
    const service = BlobServiceClient.fromConnectionString(env.AZURE_STORAGE_CONNECTION_STRING, { retryOptions: { maxTries: 1 } });
    const backend = new AzureBlobLeaseBackend({ containerClient: service.getContainerClient("rate-limits") });
    await backend.ensurePlan("first-use", validatePlan({ ...plan, leaseTtlMs: 15_000 }), { timeoutMs: 10_000 });
    await backend.close();
  }
}

afterAll(async () => {
  const done = await Promise.all([...runs.entries()].map(async ([file, run]) => [file, await run] as const));
  const passed = done.filter(([, r]) => r.code === 0 && !r.killed && r.stderr === "").length;
  if (done.length > 0) {
    const rows = done.map(([file, r]) => `  ${file.padEnd(34)} ${(r.ms / 1000).toFixed(1).padStart(5)} s  ${r.killed ? `still alive after ${EXAMPLE_BOUND_MS / 1000} s` : `exit ${r.code ?? r.signal}`}`);
    process.stdout.write(`README examples: ${examples.length} snippets type-checked, ${done.length} run, ${passed} exited cleanly by themselves:\n${rows.join("\n")}\n`);
  }
  await Promise.all(servers.map((s) => s.stop()));
}, EXAMPLE_BOUND_MS * 2);

describe("README examples", () => {
  test("the README shows at least one example, and every example reads its server addresses from the environment or needs none", () => {
    expect(examples.length).toBeGreaterThan(0);
    for (const [file, source] of sources) {
      // A hard-coded address without an environment override would reach the machine's own servers in tests.
      const fixed = source.split("\n").filter((line) => /(redis|https?):\/\/(127\.0\.0\.1|localhost):\d/.test(line) && !/process\.env\.\w+ \?\?/.test(line));
      expect({ file, fixed }).toEqual({ file, fixed: [] });
    }
  });

  test("type-check with tsc against the package's public entries", async () => {
    const result = await new Promise<{ code: number; output: string }>((resolveCheck) => {
      execFile(process.execPath, [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", "examples/tsconfig.json"], { cwd: ROOT, timeout: 120_000 }, (error, stdout, stderr) => {
        resolveCheck({ code: error ? (typeof error.code === "number" ? error.code : -1) : 0, output: stdout + stderr });
      });
    });
    // Type errors do not stop the runs: each example's own failure says more than "tsc failed".
    startRuns();
    expect(result).toEqual({ code: 0, output: "" });
  }, 120_000);

  test.each(examples)("%s runs and exits by itself", async (file) => {
    const run = runs.get(file);
    if (run === undefined) throw new Error("the runs did not start: the type-check test failed before them");
    const result = await run;
    const outcome = { file, exit: result.code, signal: result.signal, stillAliveAfterBound: result.killed, stderr: result.stderr };
    expect(outcome).toEqual({ file, exit: 0, signal: null, stillAliveAfterBound: false, stderr: "" });
    expect(result.stdout.trim()).not.toBe("");
  }, Math.ceil(examples.length / CONCURRENCY + 1) * EXAMPLE_BOUND_MS);
});
