import { execFile } from "node:child_process";
import { Redis } from "ioredis";
import { RedisLeaseBackend } from "../../src/lease-backends/redis.js";
import { freePort } from "../support/net.js";
import { startAzurite, type AzuriteServer } from "../support/servers/azurite.js";
import { startRedis, type RedisServer } from "../support/servers/redis.js";

/** Runs the CLI from source as a user would run the bin, returning its exit status and output. */
function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
  const started = Date.now();
  return new Promise((resolve) => {
    execFile(process.execPath, ["--import", "tsx", "src/cli/main.ts", ...args], { timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === "number" ? error.code : -1) : 0;
      resolve({ code, stdout, stderr, ms: Date.now() - started });
    });
  });
}

let redis: RedisServer;
let azurite: AzuriteServer;

beforeAll(async () => {
  [redis, azurite] = await Promise.all([startRedis(), startAzurite()]);
}, 60_000);
afterAll(async () => {
  await Promise.all([redis?.stop(), azurite?.stop()]);
});

describe("partitioned-rate-limiter CLI", () => {
  test("plan creates, then verifies, then reports a mismatch with exit 3 (Redis)", async () => {
    const base = ["plan", "orders-db", "--limit", "500", "--interval-ms", "1000", "--partitions", "5", "--pool", "ingest=2", "--backend", redis.url, "--grace-ms", "0"];
    const created = await cli(...base, "--json");
    expect(created.stderr).toBe("");
    expect(created.code).toBe(0);
    expect(JSON.parse(created.stdout)).toMatchObject({ outcome: "created", plan: { limit: 500, intervalMs: 1000, partitions: 5, pools: { ingest: 2 } } });
    const verified = await cli(...base);
    expect(verified.code).toBe(0);
    expect(verified.stdout).toMatch(/^verified plan of orders-db/);
    const other = await cli("plan", "orders-db", "--limit", "600", "--interval-ms", "1000", "--partitions", "5", "--backend", redis.url);
    expect(other.code).toBe(3);
    expect(other.stderr).toMatch(/plan mismatch/);
  });

  test("status shows the plan and who holds which partition (Redis)", async () => {
    const client = new Redis(redis.url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 5000, lazyConnect: true });
    await client.connect();
    const backend = new RedisLeaseBackend({ client });
    try {
      const lease = await backend.tryAcquire("orders-db", [3], "worker-7", 30_000, {});
      expect(lease?.partition).toBe(3);
      const status = await cli("status", "orders-db", "--backend", redis.url, "--json");
      expect(status.code).toBe(0);
      const parsed = JSON.parse(status.stdout) as { plan: { limit: number }; partitions: { partition: number; holderId: string | null; pool: string | null; expiresInMs: number | null }[] };
      expect(parsed.plan.limit).toBe(500);
      expect(parsed.partitions).toHaveLength(5);
      const held = parsed.partitions.filter((p) => p.holderId !== null);
      expect(held).toEqual([expect.objectContaining({ partition: 3, holderId: "worker-7" })]);
      expect(held[0]!.expiresInMs).toBeGreaterThan(20_000);
      expect(parsed.partitions[0]!.pool).toBe("ingest");
      const text = await cli("status", "orders-db", "--backend", redis.url);
      expect(text.stdout).toMatch(/1 of 5 partitions held/);
      expect(text.stdout).toMatch(/3\s+shared\s+worker-7/);
      const missing = await cli("status", "no-such-resource", "--backend", redis.url);
      expect(missing.code).toBe(3);
    } finally {
      await backend.close();
      client.disconnect();
    }
  });

  test("Azure: plan and status by connection string and by azure+http:// address", async () => {
    const created = await cli("plan", "ingest", "--limit", "100", "--interval-ms", "1000", "--partitions", "4", "--backend", azurite.connectionString, "--grace-ms", "0", "--json");
    expect(created.stderr).toBe("");
    expect(JSON.parse(created.stdout)).toMatchObject({ outcome: "created", backend: "azure-blob" });
    const key = /AccountKey=([^;]+)/.exec(azurite.connectionString)![1]!;
    const address = `azure+http://127.0.0.1:${azurite.blobPort}/devstoreaccount1?key=${encodeURIComponent(key)}`;
    const status = await cli("status", "ingest", "--backend", address, "--json");
    expect(status.stderr).toBe("");
    const parsed = JSON.parse(status.stdout) as { plan: { partitions: number }; partitions: unknown[] };
    expect(parsed.plan.partitions).toBe(4);
    expect(parsed.partitions).toHaveLength(4);
  });

  test("bad arguments exit 2 with a message naming the problem", async () => {
    const noLimit = await cli("plan", "x", "--interval-ms", "1000", "--partitions", "2", "--backend", redis.url);
    expect(noLimit).toMatchObject({ code: 2 });
    expect(noLimit.stderr).toMatch(/--limit/);
    const badUrl = await cli("status", "x", "--backend", "mongodb://localhost");
    expect(badUrl.code).toBe(2);
    expect(badUrl.stderr).toMatch(/unknown backend scheme mongodb:/);
    const badNumber = await cli("plan", "x", "--limit", "ten", "--interval-ms", "1000", "--partitions", "2", "--backend", redis.url);
    expect(badNumber.code).toBe(2);
    expect(badNumber.stderr).toMatch(/--limit must be a number/);
    const redlockTooFew = await cli("status", "x", "--backend", "redlock://127.0.0.1:1,127.0.0.1:2");
    expect(redlockTooFew.code).toBe(2);
    expect((await cli("frobnicate")).code).toBe(2);
  });

  test("an unreachable server exits 4 within the timeout", async () => {
    const port = await freePort();
    const result = await cli("status", "x", "--backend", `redis://127.0.0.1:${port}`, "--timeout-ms", "1000");
    expect(result.code).toBe(4);
    expect(result.stderr).toMatch(/unreachable/);
    // Node + tsx start-up dominates; the call itself is bounded by --timeout-ms.
    expect(result.ms).toBeLessThan(15_000);
  });
});
