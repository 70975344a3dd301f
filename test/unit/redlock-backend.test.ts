import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import { BackendError } from "../../src/errors/backend-error.js";
import { ConfigError } from "../../src/errors/config-error.js";
import { PlanMismatchError } from "../../src/errors/plan-mismatch-error.js";
import { PlanMissingError } from "../../src/errors/plan-missing-error.js";
import { TimeoutError } from "../../src/errors/timeout-error.js";
import { RedlockLeaseBackend } from "../../src/lease-backends/redlock.js";
import type { Plan } from "../../src/contract/plan.js";
import { startRedisTrio, type RedisServer } from "../support/servers/redis.js";

const PLAN: Plan = { limit: 100, intervalMs: 1000, partitions: 10, pools: {} };
const opts = { timeoutMs: 5000 };
const FOREIGN = "00000000-0000-0000-0000-000000000000|1|someone-else";

let servers: RedisServer[];
let clients: Redis[];
let admins: Redis[];
let backend: RedlockLeaseBackend;
const all: Redis[] = [];

async function connect(url: string): Promise<Redis> {
  const client = new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: 3000,
    lazyConnect: true,
    disconnectTimeout: 50,
    // Reconnect quickly so tests that restart a server need not wait long.
    retryStrategy: () => 50,
  });
  all.push(client);
  await client.connect();
  return client;
}

const key = (resource: string, suffix: string) => `t:{${resource}}:${suffix}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const until = async (what: string, check: () => Promise<boolean>, ms = 3000) => {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
};

async function newResource(): Promise<string> {
  const resource = `rl-${randomUUID().slice(0, 8)}`;
  await backend.ensurePlan(resource, PLAN, { graceMs: 0, ...opts });
  return resource;
}

beforeAll(async () => {
  servers = await startRedisTrio();
  clients = await Promise.all(servers.map((s) => connect(s.url)));
  admins = await Promise.all(servers.map((s) => connect(s.url)));
  backend = new RedlockLeaseBackend({ clients, keyPrefix: "t:" });
});
afterAll(async () => {
  for (const c of all) c.disconnect();
  await Promise.all((servers ?? []).map((s) => s.stop()));
});

describe("RedlockLeaseBackend options", () => {
  test("needs three distinct clients without offline queue, and a driftFactor in range", () => {
    expect(() => new RedlockLeaseBackend({ clients: clients.slice(0, 2) })).toThrow(ConfigError);
    expect(() => new RedlockLeaseBackend({ clients: clients.slice(0, 2) })).toThrow(/at least 3/);
    expect(() => new RedlockLeaseBackend({ clients: [clients[0]!, clients[0]!, clients[1]!] })).toThrow(/distinct/);
    const queued = new Redis(servers[0]!.url, { lazyConnect: true });
    all.push(queued);
    expect(() => new RedlockLeaseBackend({ clients: [queued, clients[1]!, clients[2]!] })).toThrow(/clients\[0\]\.options\.enableOfflineQueue/);
    expect(() => new RedlockLeaseBackend({ clients, driftFactor: 0.5 })).toThrow(/driftFactor/);
    expect(() => new RedlockLeaseBackend({ clients, retryCount: 1.5 })).toThrow(/retryCount/);
  });
});

describe("RedlockLeaseBackend quorum", () => {
  test("a lease is on every server, one EVALSHA per server per call", async () => {
    const resource = await newResource();
    // Warm-up: every server caches the scripts (the first use of one costs an extra EVAL).
    const warm = await backend.tryAcquire(resource, [9], "warm", 5000, opts);
    await backend.renew(warm!, 5000, opts);
    await backend.release(warm!, opts);
    const sent: string[] = [];
    // The test's own admin connection is left out of the count.
    const adminAddress = /addr=(\S+)/.exec(String(await admins[1]!.client("INFO")))?.[1];
    const monitor = await admins[1]!.monitor();
    monitor.on("monitor", (_t: string, args: string[], source: string) => {
      const name = String(args[0]).toLowerCase();
      if (source !== "lua" && (source !== adminAddress || name === "echo")) sent.push(name);
    });
    try {
      const lease = await backend.tryAcquire(resource, [4, 5], "a", 5000, opts);
      expect(lease).toMatchObject({ partition: 4, fencingToken: null });
      for (const admin of admins) expect(await admin.get(key(resource, "p:4"))).toMatch(new RegExp(`^${lease!.token}\\|\\d+\\|a$`));
      expect(await backend.renew(lease!, 5000, opts)).toBe(true);
      await backend.release(lease!, opts);
      await admins[1]!.echo("marker");
      await until("the monitor to catch up", async () => sent.includes("echo"));
      // tryAcquire, renew, release: one script each on this server, nothing else.
      expect(sent).toEqual(["evalsha", "evalsha", "evalsha", "echo"]);
      for (const admin of admins) expect(await admin.exists(key(resource, "p:4"))).toBe(0);
    } finally {
      monitor.disconnect();
    }
  });

  test("servers that grant different partitions: the quorum's partition is kept, the odd grant released", async () => {
    const resource = await newResource();
    await admins[0]!.set(key(resource, "p:0"), FOREIGN, "PX", 60_000);
    const lease = await backend.tryAcquire(resource, [0, 1], "a", 5000, opts);
    expect(lease?.partition).toBe(0);
    await until("the minority grant of partition 1 to be released", async () => (await admins[0]!.exists(key(resource, "p:1"))) === 0);
    expect(await admins[1]!.get(key(resource, "p:0"))).toContain(lease!.token);
    expect(await admins[2]!.get(key(resource, "p:0"))).toContain(lease!.token);
    const states = await backend.inspect(resource, opts);
    expect(states[0]).toMatchObject({ holderId: "a", fencingToken: null });
    expect(states[1]).toMatchObject({ holderId: null });
  });

  test("a three-way split grants nothing and leaves nothing behind", async () => {
    const resource = await newResource();
    // Candidates [0, 1, 2]: server 0 would grant 1, server 1 would grant 2, server 2 would grant 0.
    await admins[0]!.set(key(resource, "p:0"), FOREIGN, "PX", 60_000);
    await admins[1]!.set(key(resource, "p:0"), FOREIGN, "PX", 60_000);
    await admins[1]!.set(key(resource, "p:1"), FOREIGN, "PX", 60_000);
    const split = new RedlockLeaseBackend({ clients, keyPrefix: "t:", retryCount: 1 });
    expect(await split.tryAcquire(resource, [0, 1, 2], "a", 5000, opts)).toBeNull();
    await sleep(100);
    expect(await admins[0]!.exists(key(resource, "p:1"))).toBe(0);
    expect(await admins[1]!.exists(key(resource, "p:2"))).toBe(0);
    expect(await admins[2]!.exists(key(resource, "p:0"))).toBe(0);
    expect(await admins[0]!.get(key(resource, "p:0"))).toBe(FOREIGN);
  });

  test("a quorum reached too late for the TTL counts as no grant and is released", async () => {
    const resource = await newResource();
    // ttl 2 ms: ttl × (1 − drift) − 2 ms is below zero, so no round can be in time.
    expect(await backend.tryAcquire(resource, [3], "a", 2, opts)).toBeNull();
    await sleep(50);
    for (const admin of admins) expect(await admin.exists(key(resource, "p:3"))).toBe(0);
  });

  test("a plan differing on one server is a PlanMismatchError", async () => {
    const resource = await newResource();
    await admins[2]!.set(key(resource, "plan"), JSON.stringify({ ...PLAN, limit: 7 }));
    await expect(backend.ensurePlan(resource, PLAN, { graceMs: 0, ...opts })).rejects.toBeInstanceOf(PlanMismatchError);
    // The quorum still agrees on the plan.
    expect(await backend.readPlan(resource, opts)).toEqual(PLAN);
  });
});

describe("RedlockLeaseBackend with failing servers", () => {
  test("one server paused: every call still succeeds without waiting for it", async () => {
    const resource = await newResource();
    servers[2]!.pause();
    try {
      const started = performance.now();
      const lease = await backend.tryAcquire(resource, [1], "a", 5000, { timeoutMs: 1000 });
      expect(lease?.partition).toBe(1);
      expect(await backend.renew(lease!, 5000, { timeoutMs: 1000 })).toBe(true);
      expect(await backend.readPlan(resource, { timeoutMs: 1000 })).toEqual(PLAN);
      expect((await backend.inspect(resource, { timeoutMs: 1000 }))[1]).toMatchObject({ holderId: "a" });
      await backend.ensurePlan(resource, PLAN, { graceMs: 0, timeoutMs: 1000 });
      await backend.release(lease!, { timeoutMs: 1000 });
      const elapsed = performance.now() - started;
      // Six calls; inspect waits up to 100 ms for the stalled server, the others not at all.
      expect(elapsed).toBeLessThan(900);
      process.stdout.write(`[redlock] six calls with one of three servers SIGSTOP'd: ${elapsed.toFixed(0)} ms\n`);
    } finally {
      servers[2]!.resume();
    }
  });

  test("all paused: TimeoutError at timeoutMs; two of three killed: BackendError fast; restarted empty: PlanMissingError, then grace there", async () => {
    const resource = await newResource();
    const lease = await backend.tryAcquire(resource, [0], "a", 60_000, opts);
    expect(lease).not.toBeNull();

    for (const s of servers) s.pause();
    let started = performance.now();
    let outcome: unknown;
    try {
      outcome = await backend.tryAcquire(resource, [1], "a", 1000, { timeoutMs: 500 }).catch((e: unknown) => e);
    } finally {
      for (const s of servers) s.resume();
    }
    const pausedMs = performance.now() - started;
    expect(outcome).toBeInstanceOf(TimeoutError);
    expect(pausedMs).toBeGreaterThanOrEqual(450);
    expect(pausedMs).toBeLessThan(1500);

    // One server lost: the other two still make a quorum.
    await servers[0]!.kill();
    expect(await backend.renew(lease!, 60_000, opts)).toBe(true);
    expect((await backend.tryAcquire(resource, [1], "b", 1000, opts))?.partition).toBe(1);

    await servers[1]!.kill();
    started = performance.now();
    const killed = await backend.tryAcquire(resource, [2], "a", 1000, { timeoutMs: 500 }).catch((e: unknown) => e);
    const killedMs = performance.now() - started;
    expect(killed).toBeInstanceOf(BackendError);
    expect(killedMs).toBeLessThan(600);
    await expect(backend.renew(lease!, 1000, { timeoutMs: 500 })).rejects.toBeInstanceOf(BackendError);
    process.stdout.write(
      `[redlock] failure time, timeoutMs 500: all SIGSTOP'd ${pausedMs.toFixed(0)} ms (TimeoutError); ` +
        `2 of 3 killed ${killedMs.toFixed(1)} ms (${(killed as Error).message})\n`,
    );

    // Server 1 comes back empty, server 0 stays down: server 1 has no plan.
    await servers[1]!.restart();
    await until("client 1 to reconnect", async () => clients[1]!.status === "ready");
    await expect(backend.tryAcquire(resource, [2], "a", 1000, opts)).rejects.toBeInstanceOf(PlanMissingError);
    await backend.ensurePlan(resource, PLAN, { graceMs: 60_000, ...opts });
    await until("admin 1 to reconnect", async () => admins[1]!.status === "ready");
    expect(await admins[1]!.pttl(key(resource, "grace"))).toBeGreaterThan(50_000);
    // Server 1 is in grace and server 0 down: no quorum can grant, although server 2 would.
    expect(await backend.tryAcquire(resource, [2], "a", 1000, opts)).toBeNull();
    // The forgotten lease on partition 0 is still on server 2 alone: not a quorum, so inspect shows it free.
    expect((await backend.inspect(resource, opts))[0]).toMatchObject({ holderId: null });
    await admins[1]!.del(key(resource, "grace"));
    expect((await backend.tryAcquire(resource, [2], "c", 1000, opts))?.partition).toBe(2);

    await servers[0]!.restart();
    await until("client 0 to reconnect", async () => clients[0]!.status === "ready");
  });
});
