import { randomUUID } from "node:crypto";
import { Redis, type RedisOptions } from "ioredis";
import { BackendError } from "../../src/errors/backend-error.js";
import { ConfigError } from "../../src/errors/config-error.js";
import { PlanMismatchError } from "../../src/errors/plan-mismatch-error.js";
import { PlanMissingError } from "../../src/errors/plan-missing-error.js";
import { TimeoutError } from "../../src/errors/timeout-error.js";
import { RedisLeaseBackend } from "../../src/lease-backends/redis.js";
import type { Plan } from "../../src/contract/plan.js";
import { startRedis, type RedisServer } from "../support/servers/redis.js";

const PLAN: Plan = { limit: 100, intervalMs: 1000, partitions: 10, pools: {} };
const opts = { timeoutMs: 5000 };

let server: RedisServer;
const clients: Redis[] = [];

async function connect(extra: RedisOptions = {}): Promise<Redis> {
  const client = new Redis(server.url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: 5000,
    lazyConnect: true,
    ...extra,
  });
  clients.push(client);
  await client.connect();
  return client;
}

/**
 * Commands clients sent during `action`, by name, seen through MONITOR (commands a script runs
 * inside Redis are not round trips and are left out). `admin` must be idle during `action`.
 */
async function countCommands(admin: Redis, action: () => Promise<unknown>): Promise<Record<string, number>> {
  const monitor = await admin.monitor();
  try {
    const marker = `end-of-count-${randomUUID()}`;
    const counts: Record<string, number> = {};
    const ended = new Promise<void>((resolve) =>
      monitor.on("monitor", (_time: string, args: string[], source: string) => {
        const name = String(args[0]).toLowerCase();
        if (name === "echo" && args[1] === marker) return resolve();
        if (source !== "lua") counts[name] = (counts[name] ?? 0) + 1;
      }),
    );
    await action();
    await admin.echo(marker);
    await ended;
    return counts;
  } finally {
    monitor.disconnect();
  }
}

const newResource = () => `unit-${randomUUID().slice(0, 8)}`;

beforeAll(async () => {
  server = await startRedis();
});
afterAll(async () => {
  await Promise.all(clients.map((c) => disconnect(c)));
  await server?.stop();
});

/** Disconnects and waits until the client has let go of its socket and timers. */
async function disconnect(client: Redis): Promise<void> {
  // Without a live connection ioredis never emits "end"; there is nothing to wait for then.
  if (client.status !== "ready" && client.status !== "connect" && client.status !== "connecting") return client.disconnect();
  const ended = new Promise<void>((resolve) => client.once("end", () => resolve()));
  client.disconnect();
  await ended;
}

describe("RedisLeaseBackend options", () => {
  test("rejects a client with the offline queue on, naming the option", async () => {
    const client = new Redis(server.url, { lazyConnect: true });
    clients.push(client);
    expect(() => new RedisLeaseBackend({ client })).toThrow(ConfigError);
    expect(() => new RedisLeaseBackend({ client })).toThrow(/enableOfflineQueue/);
  });

  test("rejects a non-client and a keyPrefix that would break the hash tag", async () => {
    expect(() => new RedisLeaseBackend({ client: {} as Redis })).toThrow(ConfigError);
    const client = await connect();
    expect(() => new RedisLeaseBackend({ client, keyPrefix: "a{b}" })).toThrow(/keyPrefix/);
  });

  test("a lazily connected client is waited for on first use", async () => {
    const client = new Redis(server.url, { enableOfflineQueue: false, lazyConnect: true, maxRetriesPerRequest: 1 });
    clients.push(client);
    const backend = new RedisLeaseBackend({ client });
    expect(client.status).toBe("wait");
    await backend.ensurePlan(newResource(), PLAN, { graceMs: 0, ...opts });
    expect(client.status).toBe("ready");
  });
});

describe("RedisLeaseBackend on a real server", () => {
  let client: Redis;
  let admin: Redis;
  let backend: RedisLeaseBackend;
  beforeAll(async () => {
    client = await connect();
    admin = await connect();
    backend = new RedisLeaseBackend({ client, keyPrefix: "t:" });
  });

  test("keys share the {resource} hash tag; values carry token, fence and holder; TTL is set", async () => {
    const resource = newResource();
    await backend.ensurePlan(resource, PLAN, { graceMs: 5000, ...opts });
    expect(await admin.pttl(`t:{${resource}}:grace`)).toBeGreaterThan(4000);
    await admin.del(`t:{${resource}}:grace`);
    const lease = await backend.tryAcquire(resource, [7], "host-1|pid 2", 3000, opts);
    expect(lease).not.toBeNull();
    expect((await admin.keys(`t:{${resource}}*`)).sort()).toEqual(
      [`t:{${resource}}:fence`, `t:{${resource}}:p:7`, `t:{${resource}}:plan`].sort(),
    );
    expect(await admin.get(`t:{${resource}}:p:7`)).toBe(`${lease!.token}|${lease!.fencingToken}|host-1|pid 2`);
    const pttl = await admin.pttl(`t:{${resource}}:p:7`);
    expect(pttl).toBeGreaterThan(2000);
    expect(pttl).toBeLessThanOrEqual(3000);
    const states = await backend.inspect(resource, opts);
    expect(states[7]).toMatchObject({ holderId: "host-1|pid 2", fencingToken: lease!.fencingToken });
    expect(await admin.get(`t:{${resource}}:plan`)).toBe(
      '{"intervalMs":1000,"limit":100,"partitions":10,"pools":{}}',
    );
  });

  test("each operation is one round trip (one EVALSHA; readPlan one GET)", async () => {
    const resource = newResource();
    await backend.ensurePlan(resource, PLAN, { graceMs: 0, ...opts });
    // Warm-up: make sure every script is cached on the server.
    const warm = await backend.tryAcquire(resource, [9], "warm", 2000, opts);
    await backend.renew(warm!, 2000, opts);
    await backend.release(warm!, opts);
    await backend.inspect(resource, opts);

    let lease = null as Awaited<ReturnType<typeof backend.tryAcquire>>;
    expect(await countCommands(admin, async () => (lease = await backend.tryAcquire(resource, [0, 1, 2, 3], "a", 2000, opts)))).toEqual({ evalsha: 1 });
    expect(await countCommands(admin, () => backend.tryAcquire(resource, [0], "b", 2000, opts))).toEqual({ evalsha: 1 });
    expect(await countCommands(admin, () => backend.renew(lease!, 2000, opts))).toEqual({ evalsha: 1 });
    expect(await countCommands(admin, () => backend.release(lease!, opts))).toEqual({ evalsha: 1 });
    expect(await countCommands(admin, () => backend.inspect(resource, opts))).toEqual({ evalsha: 1 });
    expect(await countCommands(admin, () => backend.ensurePlan(resource, PLAN, { graceMs: 0, ...opts }))).toEqual({ evalsha: 1 });
    expect(await countCommands(admin, () => backend.readPlan(resource, opts))).toEqual({ get: 1 });
  });

  test("after SCRIPT FLUSH the scripts are loaded again by EVAL, once", async () => {
    const resource = newResource();
    await backend.ensurePlan(resource, PLAN, { graceMs: 0, ...opts });
    await admin.script("FLUSH");
    expect(await countCommands(admin, () => backend.tryAcquire(resource, [0], "a", 2000, opts))).toEqual({ evalsha: 1, eval: 1 });
    expect(await countCommands(admin, () => backend.tryAcquire(resource, [1], "a", 2000, opts))).toEqual({ evalsha: 1 });
  });

  test("a corrupted plan key: ensurePlan rejects with PlanMismatchError; nothing is granted; inspect is empty", async () => {
    const resource = newResource();
    await admin.set(`t:{${resource}}:plan`, "{not json");
    await expect(backend.ensurePlan(resource, PLAN, { graceMs: 0, ...opts })).rejects.toBeInstanceOf(PlanMismatchError);
    expect(await backend.readPlan(resource, opts)).toBeNull();
    expect(await backend.tryAcquire(resource, [0, 1], "a", 2000, opts)).toBeNull();
    expect(await backend.inspect(resource, opts)).toEqual([]);
    await admin.set(`t:{${resource}}:plan`, JSON.stringify({ ...PLAN, partitions: 0 }));
    await expect(backend.ensurePlan(resource, PLAN, { graceMs: 0, ...opts })).rejects.toBeInstanceOf(PlanMismatchError);
  });

  test("a non-integer TTL is rounded up; a bad TTL is a ConfigError", async () => {
    const resource = newResource();
    await backend.ensurePlan(resource, PLAN, { graceMs: 0, ...opts });
    const lease = await backend.tryAcquire(resource, [0], "a", 1500.2, opts);
    expect(await admin.pttl(`t:{${resource}}:p:0`)).toBeGreaterThan(1400);
    await expect(backend.renew(lease!, 0, opts)).rejects.toBeInstanceOf(ConfigError);
    await expect(backend.tryAcquire(resource, [1], "a", Number.NaN, opts)).rejects.toBeInstanceOf(ConfigError);
  });
});

describe("RedisLeaseBackend against a server that dies", () => {
  test("paused: calls fail with TimeoutError at about timeoutMs; killed: fail fast with BackendError; restarted empty: PlanMissingError", async () => {
    const own = await startRedis();
    let client: Redis | undefined;
    try {
      const redis = new Redis(own.url, { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 700, lazyConnect: true, disconnectTimeout: 50 });
      client = redis;
      clients.push(redis);
      await redis.connect();
      const backend = new RedisLeaseBackend({ client: redis });
      const resource = newResource();
      await backend.ensurePlan(resource, PLAN, { graceMs: 0, ...opts });
      const before = await backend.tryAcquire(resource, [0], "a", 60_000, opts);

      own.pause();
      let started = performance.now();
      await expect(backend.tryAcquire(resource, [1], "a", 1000, { timeoutMs: 500 })).rejects.toBeInstanceOf(TimeoutError);
      const pausedMs = performance.now() - started;
      expect(pausedMs).toBeGreaterThanOrEqual(450);
      expect(pausedMs).toBeLessThan(1500);

      await own.kill();
      started = performance.now();
      const killed = await backend.tryAcquire(resource, [1], "a", 1000, { timeoutMs: 500 }).catch((e: unknown) => e);
      const killedMs = performance.now() - started;
      expect(killed).toBeInstanceOf(BackendError);
      expect(killedMs).toBeLessThan(600);
      started = performance.now();
      const later = await backend.renew(before!, 1000, { timeoutMs: 500 }).catch((e: unknown) => e);
      const laterMs = performance.now() - started;
      expect(later instanceof BackendError || later instanceof TimeoutError).toBe(true);
      expect(laterMs).toBeLessThan(600);
      process.stdout.write(
        `[redis] dead-server failure time, timeoutMs 500: SIGSTOP'd ${pausedMs.toFixed(0)} ms (TimeoutError); ` +
          `killed ${killedMs.toFixed(1)} ms (${(killed as Error).message}); killed, next call ${laterMs.toFixed(1)} ms\n`,
      );

      await own.restart();
      await new Promise<void>((resolve) => (redis.status === "ready" ? resolve() : redis.once("ready", () => resolve())));
      await expect(backend.tryAcquire(resource, [0], "a", 1000, opts)).rejects.toBeInstanceOf(PlanMissingError);
      await backend.ensurePlan(resource, PLAN, { graceMs: 800, ...opts });
      expect(await backend.tryAcquire(resource, [0], "a", 1000, opts)).toBeNull();
      await new Promise((r) => setTimeout(r, 1000));
      const after = await backend.tryAcquire(resource, [0], "a", 1000, opts);
      // The fence counter restarts from the server's time, so it still grows across the restart.
      expect(after!.fencingToken!).toBeGreaterThan(before!.fencingToken!);
    } finally {
      if (client) await disconnect(client);
      await own.stop();
    }
  });
});
