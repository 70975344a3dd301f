/**
 * The CLI's documented command forms (README "Command line", `--help`) against real servers:
 * Redis, Redlock over three Redis (redlock://h1:p1,h2:p2,h3:p3 and a repeated --backend),
 * multi-host etcd (etcd://h1:p1,h2:p2), Azurite by connection string and by azure+http://, and
 * every exit status. Each command runs as its own process, as a user runs the bin.
 */
import { spawn } from "node:child_process";
import { Redis } from "ioredis";
import { runCli } from "../../src/cli/main.js";
import { RedisLeaseBackend } from "../../src/lease-backends/redis.js";
import { freePort } from "../support/net.js";
import { startAzurite, type AzuriteServer } from "../support/servers/azurite.js";
import { startEtcd, type EtcdServer } from "../support/servers/etcd.js";
import { startRedis, startRedisTrio, type RedisServer } from "../support/servers/redis.js";
import { TcpProxy } from "../support/tcp-proxy.js";

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
  /** From the last output to the exit, in ms: what the process spent lingering (only from {@link cli}). */
  lingerMs?: number;
}

/** Runs the CLI from source as a user would run the bin, returning its exit status and output. */
function cli(...args: string[]): Promise<CliResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    let lastOutput = started;
    child.stdout.on("data", (chunk: Buffer) => ((stdout += chunk.toString()), (lastOutput = performance.now())));
    child.stderr.on("data", (chunk: Buffer) => ((stderr += chunk.toString()), (lastOutput = performance.now())));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.once("close", (code) => {
      clearTimeout(timer);
      const now = performance.now();
      resolve({ code: code ?? -1, stdout, stderr, ms: now - started, lingerMs: now - lastOutput });
    });
  });
}

/** Runs the CLI in this process, to time a command without Node's and tsx's start-up. */
async function cliInProcess(...args: string[]): Promise<CliResult> {
  let stdout = "";
  let stderr = "";
  const sink = (append: (text: string) => void) => ({ write: (chunk: string) => (append(chunk), true) }) as unknown as NodeJS.WritableStream;
  const started = performance.now();
  const code = await runCli(args, sink((t) => (stdout += t)), sink((t) => (stderr += t)));
  return { code, stdout, stderr, ms: performance.now() - started };
}

const hostPort = (url: string) => url.replace(/^[a-z]+:\/\//, "");

let redis: RedisServer;
let trio: RedisServer[];
let etcd: EtcdServer;
let azurite: AzuriteServer;
let etcdProxy: TcpProxy;

beforeAll(async () => {
  [redis, trio, etcd, azurite] = await Promise.all([startRedis(), startRedisTrio(), startEtcd(), startAzurite()]);
  // A second address of the same etcd, so a multi-host address names two live endpoints.
  etcdProxy = new TcpProxy(Number(new URL(etcd.endpoint).port));
  await etcdProxy.start();
}, 90_000);
afterAll(async () => {
  await etcdProxy?.stop();
  await Promise.all([redis?.stop(), ...(trio ?? []).map((r) => r.stop()), etcd?.stop(), azurite?.stop()]);
});

describe("partitioned-rate-limiter CLI: the documented forms against real servers", () => {
  test("Redis: plan creates, verifies, and reports a different plan with exit 3; status shows holders", async () => {
    const plan = ["plan", "orders-db", "--limit", "500", "--interval-ms", "1000", "--partitions", "20", "--lease-ttl-ms", "30000", "--backend", redis.url];
    const created = await cli(...plan, "--fresh", "--json");
    expect(created.stderr).toBe("");
    expect(created.code).toBe(0);
    expect(JSON.parse(created.stdout)).toMatchObject({ outcome: "created", backend: "redis", plan: { limit: 500, intervalMs: 1000, partitions: 20, pools: {} } });
    const verified = await cli(...plan);
    expect(verified).toMatchObject({ code: 0, stderr: "" });
    expect(verified.stdout).toBe(
      `verified plan of orders-db on redis ${hostPort(redis.url)}: epoch 1, limit 500 per 1000 ms, 20 partitions of 25, 10 slices per interval, lease TTL 30000 ms, jitter 5 ms, drift 0.001\n`,
    );
    const other = await cli("plan", "orders-db", "--limit", "500", "--interval-ms", "1000", "--partitions", "5", "--backend", redis.url);
    expect(other.code).toBe(3);
    expect(other.stderr).toMatch(/^plan mismatch: /);

    const client = new Redis(redis.url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 5000, lazyConnect: true });
    await client.connect();
    const backend = new RedisLeaseBackend({ client });
    try {
      const stored = await backend.readPlan("orders-db", {});
      const granted = await backend.tryAcquire({ resource: "orders-db", plan: stored!, candidates: [3], holderId: "worker-7" }, {});
      expect(granted.kind === "granted" && granted.lease.partition).toBe(3);
      const status = await cli("status", "orders-db", "--backend", redis.url, "--json");
      expect(status).toMatchObject({ code: 0, stderr: "" });
      const parsed = JSON.parse(status.stdout) as { plan: { limit: number }; partitions: { partition: number; holderId: string | null; expiresInMs: number | null }[] };
      expect(parsed.plan.limit).toBe(500);
      expect(parsed.partitions).toHaveLength(20);
      const held = parsed.partitions.filter((p) => p.holderId !== null);
      expect(held).toEqual([expect.objectContaining({ partition: 3, holderId: "worker-7" })]);
      expect(held[0]!.expiresInMs).toBeGreaterThan(20_000);
      const text = await cli("status", "orders-db", "--backend", redis.url);
      expect(text.stdout).toMatch(/^orders-db on redis 127\.0\.0\.1:\d+: epoch 1, limit 500 per 1000 ms, 20 partitions of 25, [^\n]*\n1 of 20 partitions held\n/);
      expect(text.stdout).toMatch(/\n3\s+shared\s+worker-7\s+\d+\.\d s\s+\d+\s+1\n/);
      expect((await cli("status", "no-such-resource", "--backend", redis.url)).code).toBe(3);
    } finally {
      await backend.close();
      client.disconnect();
    }
  });

  test("Redis: --replace repairs a plan written by version 0.1 or by hand (readPlan refuses it), with a warning and the unknown-history grace", async () => {
    const client = new Redis(redis.url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 5000, lazyConnect: true });
    await client.connect();
    try {
      for (const [resource, text] of [["legacy-db", '{"intervalMs":1000,"limit":100,"partitions":10,"pools":{}}'], ["garbled-db", "{not json"]] as const) {
        await client.set(`prl:{${resource}}:plan`, text);
        const plan = ["plan", resource, "--limit", "100", "--interval-ms", "1000", "--partitions", "10", "--backend", redis.url];
        const verify = await cli(...plan);
        expect([resource, verify.code]).toEqual([resource, 3]);
        const replaced = await cli(...plan, "--replace", "--json");
        expect([resource, replaced.code]).toEqual([resource, 0]);
        expect(replaced.stderr).toMatch(new RegExp(`^warning: the stored plan of ${resource} cannot be read \\(.+\\); replacing it\n$`));
        const out = JSON.parse(replaced.stdout) as { outcome: string; epoch: number; graceMs: number; plan: { limit: number } };
        expect(out).toMatchObject({ outcome: "replaced", plan: { limit: 100 } });
        expect(out.graceMs).toBeGreaterThan(60_000);
        expect(await cli(...plan)).toMatchObject({ code: 0, stderr: "" });
      }
    } finally {
      client.disconnect();
    }
  });

  test("Redlock: redlock://h1:p1,h2:p2,h3:p3 and a repeated --backend redis://; a minority down is a warning, a majority an exit 4", async () => {
    const hosts = trio.map((r) => hostPort(r.url));
    const address = `redlock://${hosts.join(",")}`;
    const created = await cli("plan", "ingest-jobs", "--limit", "500", "--interval-ms", "1000", "--partitions", "5", "--pool", "A=1", "--pool", "B=1", "--backend", address);
    expect(created).toMatchObject({ code: 0, stderr: "" });
    // Servers up for less than a minute cannot tell a first start from a restart that forgot leases.
    expect(created.stdout).toMatch(
      new RegExp(
        `^created plan of ingest-jobs on redlock ${hosts.join(", ").replace(/\./g, "\\.")}: epoch 1, limit 500 per 1000 ms, 5 partitions of 100, pools A=1, B=1, 10 slices per interval, lease TTL 15000 ms, jitter 5 ms, drift 0\\.001\n` +
          "no lease is granted for the next 610\\d\\d ms \\(grace of a new plan: the server cannot prove that no forgotten lease is still in use\\)\n$",
      ),
    );
    const repeated = await cli("status", "ingest-jobs", "--json", ...trio.flatMap((r) => ["--backend", r.url]));
    expect(repeated).toMatchObject({ code: 0, stderr: "" });
    const parsed = JSON.parse(repeated.stdout) as { backend: string; plan: { pools: Record<string, number> }; partitions: { pool: string | null }[] };
    expect(parsed.backend).toBe("redlock");
    expect(parsed.plan.pools).toEqual({ A: 1, B: 1 });
    expect(parsed.partitions.map((p) => p.pool)).toEqual(["A", "B", null, null, null]);

    const [dead1, dead2] = [await freePort(), await freePort()];
    const minority = await cli("status", "ingest-jobs", "--backend", `redlock://${hosts[0]},${hosts[1]},127.0.0.1:${dead1}`);
    expect(minority.code).toBe(0);
    expect(minority.stderr).toBe(`warning: redis 127.0.0.1:${dead1}: connect ECONNREFUSED\n`);
    expect(minority.stdout).toMatch(/^ingest-jobs on redlock /);
    const majority = await cli("status", "ingest-jobs", "--backend", `redlock://${hosts[0]},127.0.0.1:${dead1},127.0.0.1:${dead2}`);
    expect(majority.code).toBe(4);
    expect(majority.stderr).toBe(
      `backend unreachable or failing: redlock: 2 of 3 servers unreachable, a majority is needed: redis 127.0.0.1:${dead1}: connect ECONNREFUSED; redis 127.0.0.1:${dead2}: connect ECONNREFUSED\n`,
    );
  });

  test("etcd: etcd://host:port and multi-host etcd://h1:p1,h2:p2, also with one host down", async () => {
    const live = hostPort(etcd.endpoint);
    const created = await cli("plan", "search-api", "--limit", "100", "--interval-ms", "1000", "--partitions", "10", "--backend", `etcd://${live}`, "--fresh", "--json");
    expect(created).toMatchObject({ code: 0, stderr: "" });
    expect(JSON.parse(created.stdout)).toMatchObject({ outcome: "created", backend: "etcd" });
    const both = await cli("status", "search-api", "--backend", `etcd://${live},127.0.0.1:${etcdProxy.port}`);
    expect(both).toMatchObject({ code: 0, stderr: "" });
    expect(both.stdout).toMatch(
      new RegExp(`^search-api on etcd ${live}, 127\\.0\\.0\\.1:${etcdProxy.port}: epoch 1, limit 100 per 1000 ms, 10 partitions of 10, [^\\n]*\\n(grace period: [^\\n]*\\n)?0 of 10 partitions held\\n`),
    );
    // etcd3 shuffles hosts per call: runs enough that some calls try the dead host first.
    const dead = await freePort();
    const runs = await Promise.all([1, 2, 3].map(() => cli("plan", "search-api", "--limit", "100", "--interval-ms", "1000", "--partitions", "10", "--backend", `etcd://127.0.0.1:${dead},${live}`)));
    for (const run of runs) {
      expect(run).toMatchObject({ code: 0, stderr: `warning: etcd 127.0.0.1:${dead}: connect ECONNREFUSED\n` });
      expect(run.stdout).toMatch(/^verified plan of search-api on etcd /);
    }
  });

  test("Azure: plan and status by connection string (with ;container=NAME) and by azure+http:// address", async () => {
    const connection = `${azurite.connectionString};container=rate-limits`;
    const created = await cli("plan", "ingest-storage", "--limit", "100", "--interval-ms", "1000", "--partitions", "4", "--backend", connection, "--fresh", "--json");
    expect(created).toMatchObject({ code: 0, stderr: "" });
    expect(JSON.parse(created.stdout)).toMatchObject({ outcome: "created", backend: "azure-blob" });
    const key = /AccountKey=([^;]+)/.exec(azurite.connectionString)![1]!;
    const address = `azure+http://127.0.0.1:${azurite.blobPort}/devstoreaccount1?key=${encodeURIComponent(key)}&container=rate-limits`;
    const status = await cli("status", "ingest-storage", "--backend", address, "--json");
    expect(status).toMatchObject({ code: 0, stderr: "" });
    const parsed = JSON.parse(status.stdout) as { plan: { partitions: number }; partitions: unknown[] };
    expect(parsed.plan.partitions).toBe(4);
    expect(parsed.partitions).toHaveLength(4);
    // Another container holds other plans.
    expect((await cli("status", "ingest-storage", "--backend", `${azurite.connectionString};container=elsewhere`)).code).toBe(3);
  });

  test("a refused port fails at once, naming backend, host, port and cause, with exit 4 (every backend)", async () => {
    const [p1, p2, p3] = [await freePort(), await freePort(), await freePort()];
    const cases: [string, string][] = [
      [`redis://127.0.0.1:${p1}`, `redis 127.0.0.1:${p1}: connect ECONNREFUSED`],
      [`redlock://127.0.0.1:${p1},127.0.0.1:${p2},127.0.0.1:${p3}`, `redlock: 3 of 3 servers unreachable, a majority is needed: redis 127.0.0.1:${p1}: connect ECONNREFUSED; redis 127.0.0.1:${p2}: connect ECONNREFUSED; redis 127.0.0.1:${p3}: connect ECONNREFUSED`],
      [`etcd://127.0.0.1:${p1}`, `etcd 127.0.0.1:${p1}: connect ECONNREFUSED`],
      [`etcd://127.0.0.1:${p1},127.0.0.1:${p2}`, `etcd: none of 2 hosts reachable: etcd 127.0.0.1:${p1}: connect ECONNREFUSED; etcd 127.0.0.1:${p2}: connect ECONNREFUSED`],
      [`azure+http://127.0.0.1:${p1}/devstoreaccount1?key=a2V5`, `azure-blob 127.0.0.1:${p1}: connect ECONNREFUSED`],
      [`DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:${p1}/devstoreaccount1;`, `azure-blob 127.0.0.1:${p1}: connect ECONNREFUSED`],
    ];
    for (const [address, message] of cases) {
      // In this process, so the time is the command's own, not Node's start-up.
      const result = await cliInProcess("status", "x", "--backend", address, "--timeout-ms", "5000");
      expect({ address, code: result.code, stderr: result.stderr }).toEqual({ address, code: 4, stderr: `backend unreachable or failing: ${message}\n` });
      expect(result.ms).toBeLessThan(1000);
    }
    // And as processes: each exits right after saying why (ioredis's disconnect() of a client whose
    // connection had failed used to keep the process alive 2 s longer).
    for (const address of [`redis://127.0.0.1:${p1}`, `redlock://127.0.0.1:${p1},127.0.0.1:${p2},127.0.0.1:${p3}`]) {
      const bin = await cli("status", "orders-db", "--backend", address);
      expect(bin).toMatchObject({ code: 4, stdout: "" });
      expect(bin.stderr).toMatch(/^backend unreachable or failing: red(is|lock)/);
      expect(bin.lingerMs).toBeLessThan(1000);
    }
  });

  test("a server that accepts connections but never answers fails within --timeout-ms, with exit 4", async () => {
    const proxy = new TcpProxy(redis.port);
    await proxy.start();
    proxy.blackhole();
    try {
      const result = await cliInProcess("status", "orders-db", "--backend", `redis://127.0.0.1:${proxy.port}`, "--timeout-ms", "800");
      expect(result).toMatchObject({ code: 4, stderr: `backend unreachable or failing: redis 127.0.0.1:${proxy.port}: no answer within 800 ms\n` });
      expect(result.ms).toBeGreaterThanOrEqual(790);
      expect(result.ms).toBeLessThan(2000);
    } finally {
      await proxy.stop();
    }
  });

  test("bad arguments exit 2 with a message saying what is accepted", async () => {
    const expectUsage = async (args: string[], message: string) => {
      const result = await cliInProcess(...args);
      expect({ args, code: result.code, stderr: result.stderr }).toEqual({ args, code: 2, stderr: `error: ${message}\nRun with --help for usage.\n` });
    };
    const backend = ["--backend", redis.url];
    await expectUsage(["plan", "x", "--interval-ms", "1000", "--partitions", "2", ...backend], "plan needs --limit");
    await expectUsage(["plan", "x", "--limit", "abc", "--interval-ms", "1000", "--partitions", "2", ...backend], '--limit must be a positive number, got "abc"');
    await expectUsage(["plan", "x", "--limit", "5", "--interval-ms", "1.5", "--partitions", "2", ...backend], '--interval-ms must be a whole number of milliseconds from 1 to 86400000, got "1.5"');
    await expectUsage(["plan", "x", "--limit", "5", "--interval-ms", "1000", "--partitions", "0", ...backend], '--partitions must be a whole number from 1 to 10000, got "0"');
    await expectUsage(["plan", "x", "--limit", "5", "--interval-ms", "1000", "--partitions", "2", "--pool", "A", ...backend], '--pool must look like NAME=COUNT (e.g. --pool ingest=2), got "A"');
    await expectUsage(["status", "x", "--timeout-ms", "soon", ...backend], '--timeout-ms must be a whole number of milliseconds from 1 to 600000, got "soon"');
    await expectUsage(["status", "x", "--frobnicate", ...backend], "unknown option --frobnicate for status; allowed: --backend <address>, --prefix <p>, --timeout-ms <ms>, --json, --help");
    await expectUsage(["status", "x", "--backend"], "--backend needs a value");
    await expectUsage(["status", "x", "--backend", "redlock://h1:p1,h2:p2,h3:p3"], 'redlock://h1:p1,h2:p2,h3:p3: the port of "h1:p1" must be a number from 1 to 65535, got "p1"');
    await expectUsage(["status", "x", "--backend", "redlock://127.0.0.1:1,127.0.0.1:2"], "Redlock needs at least 3 independent Redis servers, got 2: redlock://127.0.0.1:1,127.0.0.1:2");
    expect((await cliInProcess("status", "x", "--backend", "mongodb://localhost")).stderr).toMatch(/^error: unknown backend scheme mongodb: in mongodb:\/\/localhost; expected one of:\n {2}redis:\/\//);
    await expectUsage(["frobnicate"], 'unknown command "frobnicate"; expected status, plan or dashboard');
    const bin = await cli("plan", "x", "--limit", "ten", "--interval-ms", "1000", "--partitions", "2", ...backend);
    expect(bin).toMatchObject({ code: 2, stderr: 'error: --limit must be a positive number, got "ten"\nRun with --help for usage.\n' });
  });

  test("--help lists every command, every address form and the exit statuses", async () => {
    const help = await cli("--help");
    expect(help.code).toBe(0);
    for (const form of ["status <resource>", "plan <resource>", "dashboard <resource>", "redis://", "redlock://", "etcd://", "azure+http://", "connection string", "Exit status"]) expect(help.stdout).toContain(form);
    const planHelp = await cliInProcess("plan", "--help");
    expect(planHelp.code).toBe(0);
    expect(planHelp.stdout).toMatch(/--fresh/);
    expect((await cliInProcess()).code).toBe(2);
  });
});
