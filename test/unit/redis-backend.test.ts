import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis, type RedisOptions } from "ioredis";
import { encodeHolderRecord } from "../../src/contract/holder-record.js";
import type { AcquireResult, HolderRecord, Lease } from "../../src/contract/lease-backend.js";
import { canonicalPlan, encodeStoredPlan, validatePlan, type StoredPlan } from "../../src/contract/plan.js";
import { backendEpochGraceMs, creationGraceMs, deletionGraceMs, switchGraceMs, unknownHistoryGraceMs } from "../../src/contract/timing.js";
import { BackendError } from "../../src/errors/backend-error.js";
import { ConfigError } from "../../src/errors/config-error.js";
import { PlanMismatchError } from "../../src/errors/plan-mismatch-error.js";
import { PlanMissingError } from "../../src/errors/plan-missing-error.js";
import { TimeoutError } from "../../src/errors/timeout-error.js";
import { RedisLeaseBackend } from "../../src/lease-backends/redis.js";
import { ensureBinary } from "../support/binaries.js";
import { freePort, waitForPort } from "../support/net.js";
import { launchRedis, startRedis, type RedisServer } from "../support/servers/redis.js";

// RedisLeaseBackend against real redis-servers: what the conformance suite cannot see from the
// outside (key layout, round trips, the server identity check, the fresh fast path).

/** TTL 1 s: short enough to wait out. */
const PLAN = validatePlan({ limit: 100, intervalMs: 1000, partitions: 10, leaseTtlMs: 1000 });
const STORED: StoredPlan = { plan: PLAN, epoch: 1 };
/** TTL 10 s: leases outlive a server restart. */
const LONG = validatePlan({ limit: 100, intervalMs: 1000, partitions: 10, leaseTtlMs: 10_000 });
const LONG_STORED: StoredPlan = { plan: LONG, epoch: 1 };
const CALL = { timeoutMs: 5000 };
const RESTORE_GRACE = backendEpochGraceMs(LONG);

let server: RedisServer;
const clients: Redis[] = [];

async function connect(url = server.url, extra: RedisOptions = {}): Promise<Redis> {
  const client = new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: 5000,
    lazyConnect: true,
    // Reconnect quickly after a server restart.
    retryStrategy: () => 50,
    ...extra,
  });
  client.on("error", () => undefined);
  clients.push(client);
  await client.connect();
  return client;
}

/** Disconnects and waits until the client has let go of its socket and timers. */
async function disconnect(client: Redis): Promise<void> {
  // Without a live connection ioredis never emits "end"; there is nothing to wait for then.
  if (client.status !== "ready" && client.status !== "connect" && client.status !== "connecting") return client.disconnect();
  const ended = new Promise<void>((resolve) => client.once("end", () => resolve()));
  client.disconnect();
  await ended;
}

const ready = (client: Redis) =>
  client.status === "ready" ? Promise.resolve() : new Promise<void>((resolve) => client.once("ready", () => resolve()));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const newResource = () => `unit-${randomUUID().slice(0, 8)}`;
const key = (prefix: string, resource: string, suffix: string) => `${prefix}{${resource}}:${suffix}`;

/** One field of `INFO section`. */
async function info(client: Redis, section: string, field: string): Promise<string> {
  const value = new RegExp(`^${field}:(.*)$`, "m").exec(await client.info(section))?.[1]?.trim();
  if (value === undefined) throw new Error(`INFO ${section} has no ${field}`);
  return value;
}

/** The server's clock in µs (`TIME`). */
async function serverMicros(client: Redis): Promise<number> {
  const [s, us] = await client.time();
  return Number(s) * 1e6 + Number(us);
}

/** Waits until `INFO server` reports at least `seconds` of uptime. */
async function uptimeAtLeast(client: Redis, seconds: number): Promise<void> {
  while (Number(await info(client, "server", "uptime_in_seconds")) < seconds) await sleep(200);
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

function record(holderId: string, held: number[] = [], extra: Partial<HolderRecord> = {}): HolderRecord {
  return { holderId, pool: null, wants: held.length, weight: 1, reserve: 0, held, demand: 0, rate: 0, ...extra };
}

function acquire(backend: RedisLeaseBackend, resource: string, candidates: number[], holderId = "holder-a", plan = STORED): Promise<AcquireResult> {
  return backend.tryAcquire({ resource, plan, candidates, holderId }, CALL);
}

async function lease(backend: RedisLeaseBackend, resource: string, candidates: number[], holderId = "holder-a", plan = STORED): Promise<Lease> {
  const result = await acquire(backend, resource, candidates, holderId, plan);
  if (result.kind !== "granted") throw new Error(`expected a grant of ${candidates.join(",")}, got ${JSON.stringify(result)}`);
  return result.lease;
}

function beat(backend: RedisLeaseBackend, resource: string, holderId: string, leases: Lease[], plan = STORED, extra: Partial<HolderRecord> = {}) {
  return backend.heartbeat({ resource, plan, holder: record(holderId, leases.map((l) => l.partition), extra), leases }, CALL);
}

/** Every key under `pattern` (SCAN, so it is safe on a shared server). */
async function scanKeys(client: Redis, pattern: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = "0";
  do {
    const [next, batch] = await client.scan(cursor, "MATCH", pattern, "COUNT", 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== "0");
  return keys.sort();
}

beforeAll(async () => {
  server = await startRedis();
});
afterAll(async () => {
  await Promise.all(clients.map((c) => disconnect(c)));
  await server?.stop();
});

describe("RedisLeaseBackend options", () => {
  test("rejects a client with the offline queue on, naming the option", () => {
    const client = new Redis(server.url, { lazyConnect: true });
    clients.push(client);
    let thrown: unknown;
    try {
      new RedisLeaseBackend({ client });
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(ConfigError);
    expect((thrown as ConfigError).option).toBe("client.options.enableOfflineQueue");
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
    await backend.ensurePlan(newResource(), PLAN, { history: "fresh", ...CALL });
    expect(client.status).toBe("ready");
  });
});

describe("RedisLeaseBackend keys and round trips", () => {
  let client: Redis;
  let admin: Redis;
  let backend: RedisLeaseBackend;
  beforeAll(async () => {
    client = await connect();
    admin = await connect();
    backend = new RedisLeaseBackend({ client, keyPrefix: "t:" });
  });

  test("keys share the {resource} hash tag; plan, server, grace, fence, epoch, partition and holder values as documented", async () => {
    const resource = newResource();
    const k = (suffix: string) => key("t:", resource, suffix);
    // A server up for less than the grace cannot prove the resource fresh: the unknown-history grace.
    expect(Number(await info(admin, "server", "uptime_in_seconds"))).toBeLessThan(unknownHistoryGraceMs(PLAN) / 1000 - 10);
    const before = await serverMicros(admin);
    expect(await backend.ensurePlan(resource, PLAN, { history: "unknown", ...CALL })).toEqual(STORED);
    expect(await scanKeys(admin, `t:{${resource}}*`)).toEqual([k("epoch"), k("fence"), k("grace"), k("plan"), k("server")]);
    expect(await admin.get(k("plan"))).toBe(encodeStoredPlan(STORED));
    expect(await admin.get(k("plan"))).toBe(`{"epoch":1,"plan":${canonicalPlan(PLAN)},"restoreGraceMs":${backendEpochGraceMs(PLAN)}}`);
    expect(await admin.get(k("server"))).toBe(await info(admin, "server", "run_id"));
    expect(await admin.get(k("epoch"))).toBe("1");
    const gracePttl = await admin.pttl(k("grace"));
    expect(gracePttl).toBeGreaterThan(unknownHistoryGraceMs(PLAN) - 1000);
    expect(gracePttl).toBeLessThanOrEqual(unknownHistoryGraceMs(PLAN));
    // The fence counter starts at the server's clock in µs, so it grows across restarts without persistence.
    const fence = Number(await admin.get(k("fence")));
    expect(fence).toBeGreaterThanOrEqual(before);
    expect(fence).toBeLessThanOrEqual(await serverMicros(admin));

    await admin.del(k("grace"));
    const a = await lease(backend, resource, [7], "host-1|pid-2");
    expect(a).toMatchObject({ resource, partition: 7, holderId: "host-1|pid-2", fencingToken: fence + 1, epoch: 1 });
    expect(a.token).toMatch(/^[0-9a-f-]{36}$/);
    expect(await admin.get(k("p:7"))).toBe(`${a.token}|${fence + 1}|1|host-1|pid-2`);
    const pttl = await admin.pttl(k("p:7"));
    expect(pttl).toBeGreaterThan(PLAN.leaseTtlMs - 300);
    expect(pttl).toBeLessThanOrEqual(PLAN.leaseTtlMs);

    const rec = record("host-1|pid-2", [7], { wants: 3, demand: 1.23456, rate: 2 });
    const nowMs = Math.floor((await serverMicros(admin)) / 1000);
    await backend.heartbeat({ resource, plan: STORED, holder: rec, leases: [a] }, CALL);
    const stored = await admin.hget(k("holders"), "host-1|pid-2");
    const match = /^(\d+)\|(\d+)\|(.*)$/.exec(stored ?? "");
    expect(match).not.toBeNull();
    const [, since, expiresAt, json] = match!;
    expect(Number(since)).toBeGreaterThanOrEqual(nowMs);
    expect(Number(expiresAt) - Number(since)).toBe(PLAN.leaseTtlMs);
    expect(json).toBe(encodeHolderRecord(rec));
    expect(JSON.parse(json!)).toMatchObject({ wants: 3, demand: 1.235 });
    // The hash expires on its own two TTLs after the last publication.
    const hashPttl = await admin.pttl(k("holders"));
    expect(hashPttl).toBeGreaterThan(PLAN.leaseTtlMs);
    expect(hashPttl).toBeLessThanOrEqual(2 * PLAN.leaseTtlMs);
    expect(await scanKeys(admin, `t:{${resource}}*`)).toEqual([k("epoch"), k("fence"), k("holders"), k("p:7"), k("plan"), k("server")]);

    const state = await backend.inspect(resource, CALL);
    expect(state.partitions[7]).toMatchObject({ partition: 7, holderId: "host-1|pid-2", fencingToken: fence + 1, epoch: 1 });
    expect(state.partitions[7]!.expiresInMs).toBeGreaterThan(0);
    expect(state.holders.map((h) => [h.holderId, h.since, h.wants])).toEqual([["host-1|pid-2", Number(since), 3]]);
  });

  test("each operation is one round trip: one EVALSHA (readPlan one GET; replacePlan and deletePlan read the plan first)", async () => {
    const resource = newResource();
    await backend.ensurePlan(resource, PLAN, { history: "fresh", ...CALL });
    // Warm-up: make sure every script is cached on the server.
    const warm = await lease(backend, resource, [9], "warm");
    await beat(backend, resource, "warm", [warm]);
    await backend.release(warm, CALL);
    await backend.inspect(resource, CALL);
    const scratch = newResource();
    await backend.ensurePlan(scratch, PLAN, { history: "fresh", ...CALL });
    await backend.replacePlan(scratch, PLAN, CALL);
    await backend.deletePlan(scratch, CALL);

    const one = { evalsha: 1 };
    let a = null as Lease | null;
    expect(await countCommands(admin, async () => (a = await lease(backend, resource, [0, 1, 2, 3], "a")))).toEqual(one);
    const b = await lease(backend, resource, [1], "a");
    const c = await lease(backend, resource, [2], "a");
    expect(await countCommands(admin, async () => expect(await acquire(backend, resource, [0, 1, 2], "b")).toEqual({ kind: "taken" }))).toEqual(one);
    const other: StoredPlan = { plan: validatePlan({ ...PLAN, limit: 99 }), epoch: 1 };
    expect(await countCommands(admin, async () => expect(await acquire(backend, resource, [5], "b", other)).toEqual({ kind: "plan-changed", epoch: 1 }))).toEqual(one);
    // One heartbeat renews every lease and publishes the record in one script.
    expect(await countCommands(admin, async () => expect((await beat(backend, resource, "a", [a!, b, c])).renewed).toEqual([true, true, true]))).toEqual(one);
    expect(await countCommands(admin, () => backend.release(a!, CALL))).toEqual(one);
    expect(await countCommands(admin, () => backend.inspect(resource, CALL))).toEqual(one);
    expect(await countCommands(admin, () => backend.ensurePlan(resource, PLAN, { history: "fresh", ...CALL }))).toEqual(one);
    expect(await countCommands(admin, () => backend.readPlan(resource, CALL))).toEqual({ get: 1 });
    const next = validatePlan({ ...PLAN, limit: 50 });
    expect(await countCommands(admin, () => backend.replacePlan(resource, next, CALL))).toEqual({ get: 1, evalsha: 1 });
    // During the switch grace: still one script.
    expect(await countCommands(admin, async () => expect((await acquire(backend, resource, [5], "b", { plan: next, epoch: 2 })).kind).toBe("grace"))).toEqual(one);
    expect(await countCommands(admin, () => backend.deletePlan(resource, CALL))).toEqual({ get: 1, evalsha: 1 });
  });

  test("after SCRIPT FLUSH the scripts are loaded again by EVAL, once", async () => {
    const resource = newResource();
    await backend.ensurePlan(resource, PLAN, { history: "fresh", ...CALL });
    await admin.script("FLUSH");
    expect(await countCommands(admin, () => lease(backend, resource, [0]))).toEqual({ evalsha: 1, eval: 1 });
    expect(await countCommands(admin, () => lease(backend, resource, [1]))).toEqual({ evalsha: 1 });
  });
});

describe("RedisLeaseBackend stored plans", () => {
  let client: Redis;
  let admin: Redis;
  let backend: RedisLeaseBackend;
  beforeAll(async () => {
    client = await connect();
    admin = await connect();
    backend = new RedisLeaseBackend({ client, keyPrefix: "s:" });
  });
  const k = (resource: string, suffix: string) => key("s:", resource, suffix);

  const canonical = encodeStoredPlan(STORED);
  const body = canonicalPlan(PLAN);
  const restore = backendEpochGraceMs(PLAN);
  // [what, stored text, whether the scripts can read it]: texts the scripts cannot read refuse
  // tryAcquire with PlanMismatchError; texts they can read but that are not the request's
  // canonical text refuse it as "plan-changed". Neither grants anything.
  const corrupt: Array<[string, string, boolean]> = [
    ["not JSON", "{not json", false],
    ["empty", "", false],
    ["written by 0.1 (no epoch, no timing fields)", '{"intervalMs":1000,"limit":100,"partitions":10,"pools":{}}', false],
    ["without restoreGraceMs", `{"epoch":1,"plan":${body}}`, false],
    ["restoreGraceMs a string", `{"epoch":1,"plan":${body},"restoreGraceMs":"${restore}"}`, false],
    ["partitions 0", `{"epoch":1,"plan":${body.replace('"partitions":10', '"partitions":0')},"restoreGraceMs":${restore}}`, true],
    ["epoch 0", canonical.replace('"epoch":1', '"epoch":0'), true],
    ["not canonical: spaces", canonical.replace('"epoch":1,', '"epoch": 1, '), true],
    ["not canonical: fields reordered", `{"plan":${body},"epoch":1,"restoreGraceMs":${restore}}`, true],
    ["not canonical: limit spelled 1e2", canonical.replace('"limit":100', '"limit":1e2'), true],
    ["not canonical: a shorter restoreGraceMs edited in", canonical.replace(`"restoreGraceMs":${restore}`, '"restoreGraceMs":0'), true],
    ["not canonical: an unknown field", canonical.replace('"epoch":1,', '"epoch":1,"note":"x",'), true],
  ];
  test.each(corrupt)("a plan key %s: PlanMismatchError from ensurePlan, readPlan and inspect; nothing granted or published; the key left alone", async (_what, text, scriptsRead) => {
    const resource = newResource();
    await admin.set(k(resource, "plan"), text);
    await expect(backend.ensurePlan(resource, PLAN, { history: "fresh", ...CALL })).rejects.toBeInstanceOf(PlanMismatchError);
    const readError = await backend.readPlan(resource, CALL).catch((e: unknown) => e);
    expect(readError).toBeInstanceOf(PlanMismatchError);
    expect((readError as Error).message).toMatch(/cannot be read|0\.1/);
    await expect(backend.inspect(resource, CALL)).rejects.toBeInstanceOf(PlanMismatchError);
    if (scriptsRead) expect(await acquire(backend, resource, [0, 1])).toMatchObject({ kind: "plan-changed" });
    else await expect(acquire(backend, resource, [0, 1])).rejects.toBeInstanceOf(PlanMismatchError);
    const forged: Lease = { resource, partition: 0, holderId: "holder-a", token: randomUUID(), fencingToken: 1, epoch: 1 };
    const hb = await beat(backend, resource, "holder-a", [forged]);
    expect([hb.renewed, hb.samePlan, hb.epoch === null]).toEqual([[false], false, !scriptsRead]);
    // The key was left alone; no lease was granted and no record published.
    expect(await admin.get(k(resource, "plan"))).toBe(text);
    expect(await scanKeys(admin, `s:{${resource}}:p:*`)).toEqual([]);
    expect(await admin.exists(k(resource, "holders"))).toBe(0);
  });

  test("replacePlan repairs an unreadable plan: the next epoch, with the unknown-history grace", async () => {
    for (const text of ["{not json", '{"intervalMs":1000,"limit":100,"partitions":10,"pools":{}}', canonical.replace('"limit":100', '"limit":1e2')]) {
      const resource = newResource();
      await admin.set(k(resource, "plan"), text);
      expect(await backend.replacePlan(resource, PLAN, CALL)).toEqual(STORED);
      expect(await admin.get(k(resource, "plan"))).toBe(canonical);
      expect(await admin.pttl(k(resource, "grace"))).toBeGreaterThan(creationGraceMs(PLAN, "unknown") - 1000);
      expect(await backend.readPlan(resource, CALL)).toEqual(STORED);
    }
  });

  test("a request under another stored plan with the same epoch number is refused: nothing granted, renewed or published", async () => {
    const resource = newResource();
    await backend.ensurePlan(resource, LONG, { history: "fresh", ...CALL });
    const a = await lease(backend, resource, [0], "holder-a", LONG_STORED);
    for (const field of [{ slicesPerInterval: 5 }, { jitterMs: 6 }, { driftFactor: 0.002 }, { leaseTtlMs: 2000 }, { pools: { ingest: 1 } }]) {
      const other: StoredPlan = { plan: validatePlan({ ...LONG, ...field }), epoch: 1 };
      expect(await acquire(backend, resource, [1, 2], "holder-b", other)).toEqual({ kind: "plan-changed", epoch: 1 });
      const before = await admin.pttl(k(resource, "p:0"));
      await sleep(30);
      const hb = await beat(backend, resource, "holder-b", [a], other);
      expect([hb.renewed, hb.samePlan, hb.epoch]).toEqual([[false], false, 1]);
      expect(await admin.pttl(k(resource, "p:0"))).toBeLessThan(before);
      expect(await admin.hexists(k(resource, "holders"), "holder-b")).toBe(0);
    }
    expect(await scanKeys(admin, `s:{${resource}}:p:*`)).toEqual([k(resource, "p:0")]);
  });

  test("epochs: replacePlan stores the next with the switch grace; deletePlan leaves epoch and fence as a tombstone; epochs keep growing", async () => {
    const resource = newResource();
    await backend.ensurePlan(resource, PLAN, { history: "fresh", ...CALL });
    const a = await lease(backend, resource, [0]);
    const next = validatePlan({ ...PLAN, limit: 50, leaseTtlMs: 3000 });
    await expect(backend.replacePlan(resource, next, { expectedEpoch: 2, ...CALL })).rejects.toBeInstanceOf(PlanMismatchError);
    expect(await backend.replacePlan(resource, next, { expectedEpoch: 1, ...CALL })).toEqual({ plan: next, epoch: 2 });
    expect(await admin.get(k(resource, "epoch"))).toBe("2");
    expect(await admin.get(k(resource, "plan"))).toBe(encodeStoredPlan({ plan: next, epoch: 2 }));
    expect(await admin.pttl(k(resource, "grace"))).toBeGreaterThan(switchGraceMs(PLAN, next) - 500);
    expect(await admin.pttl(k(resource, "grace"))).toBeLessThanOrEqual(switchGraceMs(PLAN, next));
    // The old-epoch lease is not renewed, even when sent with the new plan (its key is not extended either).
    const before = await admin.pttl(k(resource, "p:0"));
    const hb = await backend.heartbeat({ resource, plan: { plan: next, epoch: 2 }, holder: record("holder-a", [0]), leases: [a] }, CALL);
    expect([hb.renewed, hb.samePlan, hb.epoch]).toEqual([[false], true, 2]);
    expect(await admin.pttl(k(resource, "p:0"))).toBeLessThanOrEqual(before);

    const fence = await admin.get(k(resource, "fence"));
    expect(await backend.deletePlan(resource, CALL)).toBe(true);
    expect((await scanKeys(admin, `s:{${resource}}:*`)).filter((name) => !name.includes(":p:"))).toEqual(
      [k(resource, "epoch"), k(resource, "fence"), k(resource, "grace"), k(resource, "holders"), k(resource, "server")],
    );
    expect(await admin.get(k(resource, "fence"))).toBe(fence);
    expect(await admin.pttl(k(resource, "grace"))).toBeGreaterThan(deletionGraceMs(next) - 500);
    expect(await backend.deletePlan(resource, CALL)).toBe(false);
    expect(await backend.ensurePlan(resource, PLAN, { history: "fresh", ...CALL })).toEqual({ plan: PLAN, epoch: 3 });
  });

  test("the lease TTL is the stored plan's: a plan with a non-integer TTL is a ConfigError, and a request cannot choose another", async () => {
    const resource = newResource();
    await expect(backend.ensurePlan(resource, { ...PLAN, leaseTtlMs: 1500.5 }, CALL)).rejects.toMatchObject({ code: "ERR_CONFIG", option: "plan.leaseTtlMs" });
    await expect(backend.ensurePlan(resource, { ...PLAN, leaseTtlMs: Number.NaN }, CALL)).rejects.toBeInstanceOf(ConfigError);
    expect(await admin.exists(k(resource, "plan"))).toBe(0);
    await backend.ensurePlan(resource, PLAN, { history: "fresh", ...CALL });
    const longer: StoredPlan = { plan: validatePlan({ ...PLAN, leaseTtlMs: 60_000 }), epoch: 1 };
    expect((await acquire(backend, resource, [0], "a", longer)).kind).toBe("plan-changed");
    await lease(backend, resource, [0]);
    expect(await admin.pttl(k(resource, "p:0"))).toBeLessThanOrEqual(PLAN.leaseTtlMs);
  });
});

describe("RedisLeaseBackend holder records", () => {
  test("since is kept across publications; records expire with the TTL and are dropped from the hash; the hash expires on its own", async () => {
    const client = await connect();
    const admin = await connect();
    const backend = new RedisLeaseBackend({ client, keyPrefix: "h:" });
    const resource = newResource();
    const holders = key("h:", resource, "holders");
    await backend.ensurePlan(resource, PLAN, { history: "fresh", ...CALL });
    const first = await beat(backend, resource, "holder-a", [], STORED, { wants: 2 });
    const since = first.holders[0]!.since;
    expect(first.holders.map((h) => [h.holderId, h.wants])).toEqual([["holder-a", 2]]);
    await sleep(300);
    const second = await beat(backend, resource, "holder-a", [], STORED, { wants: 4 });
    expect(second.holders.map((h) => [h.holderId, h.since, h.wants])).toEqual([["holder-a", since, 4]]);
    // The stored expiry moved with the publication; the time left is a full TTL again.
    expect(second.holders[0]!.expiresInMs).toBeGreaterThan(PLAN.leaseTtlMs - 100);
    // A record that cannot be read is dropped; one that reads but does not decode is left out.
    await admin.hset(holders, "garbage", "not a record", "undecodable", `1|${Date.now() + 60_000}|{"wants":-1}`);
    const third = await beat(backend, resource, "holder-b", [], STORED, { wants: 1 });
    expect(third.holders.map((h) => h.holderId).sort()).toEqual(["holder-a", "holder-b"]);
    expect(await admin.hexists(holders, "garbage")).toBe(0);
    expect(await admin.hexists(holders, "undecodable")).toBe(1);
    await admin.hdel(holders, "undecodable");

    // holder-a stops publishing: after its TTL its record is gone from the reply and the hash.
    await sleep(PLAN.leaseTtlMs + 100);
    const fourth = await beat(backend, resource, "holder-b", [], STORED, { wants: 1 });
    expect(fourth.holders.map((h) => h.holderId)).toEqual(["holder-b"]);
    expect(await admin.hkeys(holders)).toEqual(["holder-b"]);
    // Published again after it expired: a new since.
    const back = await beat(backend, resource, "holder-a", [], STORED);
    expect(back.holders.find((h) => h.holderId === "holder-a")!.since).toBeGreaterThan(since);
    // Nobody publishes: the hash itself is gone after twice the TTL.
    const pttl = await admin.pttl(holders);
    expect(pttl).toBeGreaterThan(PLAN.leaseTtlMs);
    expect(pttl).toBeLessThanOrEqual(2 * PLAN.leaseTtlMs);
    await sleep(pttl + 100);
    expect(await admin.exists(holders)).toBe(0);
    expect((await backend.inspect(resource, CALL)).holders).toEqual([]);
  });
});

describe("RedisLeaseBackend server identity", () => {
  test("restart from a snapshot taken between two grants: the first script starts the restore grace, moves the fence, renews the survivor", async () => {
    const own = await launchRedis();
    try {
      const client = await connect(own.url);
      const admin = await connect(own.url);
      const backend = new RedisLeaseBackend({ client, keyPrefix: "r:" });
      const resource = newResource();
      const k = (suffix: string) => key("r:", resource, suffix);
      await backend.ensurePlan(resource, LONG, { history: "fresh", ...CALL });
      const a = await lease(backend, resource, [1], "holder-a", LONG_STORED);
      await own.save();
      const b = await lease(backend, resource, [2], "holder-b", LONG_STORED);
      const runId = await info(admin, "server", "run_id");

      await own.restartFromSnapshot();
      await Promise.all([ready(client), ready(admin)]);
      expect(await info(admin, "server", "run_id")).not.toBe(runId);
      // Nothing has run on the resource yet: the snapshot's marks, no grace, the older fence.
      expect(await admin.get(k("server"))).toBe(runId);
      expect(await admin.exists(k("grace"), k("p:2"))).toBe(0);
      expect(Number(await admin.get(k("fence")))).toBe(a.fencingToken);

      const started = Date.now();
      const hb = await backend.heartbeat({ resource, plan: LONG_STORED, holder: record("holder-a", [1, 2]), leases: [a, b] }, CALL);
      // The survivor (in the snapshot with its token) is renewed; the forgotten one is refused.
      expect(hb.renewed).toEqual([true, false]);
      expect([hb.samePlan, hb.epoch]).toEqual([true, 1]);
      expect(hb.graceMs).toBeGreaterThan(RESTORE_GRACE - (Date.now() - started) - 500);
      expect(hb.graceMs).toBeLessThanOrEqual(RESTORE_GRACE);
      expect(await admin.pttl(k("p:1"))).toBeGreaterThan(LONG.leaseTtlMs - 1000);
      expect(await admin.get(k("server"))).toBe(await info(admin, "server", "run_id"));
      expect(Number(await admin.get(k("fence")))).toBeGreaterThan(b.fencingToken!);
      const during = await acquire(backend, resource, [2], "holder-c", LONG_STORED);
      expect(during.kind).toBe("grace");
      expect((during as { remainingMs: number }).remainingMs).toBeLessThanOrEqual(hb.graceMs);
      expect((await backend.inspect(resource, CALL)).graceMs).toBeGreaterThan(RESTORE_GRACE - 5000);

      // Past the grace (cut short here): the forgotten partition is granted with a larger fence.
      await admin.del(k("grace"));
      const c = await lease(backend, resource, [1, 2], "holder-c", LONG_STORED);
      expect(c.partition).toBe(2);
      expect(c.fencingToken!).toBeGreaterThan(b.fencingToken!);
    } finally {
      await own.stop();
    }
  });

  test("restart from a snapshot taken after a grant: racing first scripts from eight clients all see the grace; the lease renews", async () => {
    const own = await launchRedis();
    try {
      const admin = await connect(own.url);
      const backends = await Promise.all(Array.from({ length: 8 }, async () => new RedisLeaseBackend({ client: await connect(own.url), keyPrefix: "r:" })));
      const backend = backends[0]!;
      const resource = newResource();
      await backend.ensurePlan(resource, LONG, { history: "fresh", ...CALL });
      const a = await lease(backend, resource, [0], "holder-a", LONG_STORED);
      const fences = [a.fencingToken!];
      for (const p of [1, 2, 3]) {
        const l = await lease(backend, resource, [p], "holder-b", LONG_STORED);
        fences.push(l.fencingToken!);
        await backend.release(l, CALL);
      }
      await own.save();
      // Granted after the snapshot: forgotten by the restart.
      for (const p of [4, 5]) fences.push((await lease(backend, resource, [p], "holder-b", LONG_STORED)).fencingToken!);

      await own.restartFromSnapshot();
      await Promise.all(clients.filter((c) => c.options.port === own.port).map(ready));
      const results = await Promise.all(backends.map((b, i) => acquire(b, resource, [4, 5, 6, 7, 8, 9], `racer-${i}`, LONG_STORED)));
      expect(results.map((r) => r.kind)).toEqual(Array(8).fill("grace"));
      expect(await scanKeys(admin, `r:{${resource}}:p:*`)).toEqual([key("r:", resource, "p:0")]);
      expect((await beat(backend, resource, "holder-a", [a], LONG_STORED)).renewed).toEqual([true]);
      await admin.del(key("r:", resource, "grace"));
      const next = await lease(backend, resource, [4], "holder-c", LONG_STORED);
      expect(next.fencingToken!).toBeGreaterThan(Math.max(...fences));
    } finally {
      await own.stop();
    }
  });

  test("restart from a snapshot of a deleted plan (a tombstone): the fence still moves past every token issued before", async () => {
    const own = await launchRedis();
    try {
      const client = await connect(own.url);
      const admin = await connect(own.url);
      const backend = new RedisLeaseBackend({ client, keyPrefix: "r:" });
      const resource = newResource();
      const k = (suffix: string) => key("r:", resource, suffix);
      await backend.ensurePlan(resource, PLAN, { history: "fresh", ...CALL });
      const first = await lease(backend, resource, [0]);
      await backend.release(first, CALL);
      expect(await backend.deletePlan(resource, CALL)).toBe(true);
      await own.save();
      // The plan stored again after the snapshot, and a grant under it: both forgotten by the restart.
      const again = await backend.ensurePlan(resource, PLAN, { history: "fresh", ...CALL });
      expect(again.epoch).toBe(2);
      await admin.del(k("grace"));
      const second = await lease(backend, resource, [0], "holder-a", again);
      expect(second.fencingToken!).toBeGreaterThan(first.fencingToken!);

      await own.restartFromSnapshot();
      await Promise.all([ready(client), ready(admin)]);
      expect(await admin.exists(k("plan"))).toBe(0);
      const stored = await backend.ensurePlan(resource, PLAN, { history: "lost", ...CALL });
      expect(stored.epoch).toBe(2);
      // A tombstone is a trace: a grace, whatever the uptime.
      expect(await admin.pttl(k("grace"))).toBeGreaterThan(0);
      await admin.del(k("grace"));
      const third = await lease(backend, resource, [0], "holder-b", stored);
      // The same epoch number as the forgotten grant's, but never the same fencing token.
      expect(third.fencingToken!).toBeGreaterThan(second.fencingToken!);
    } finally {
      await own.stop();
    }
  });

  test("a promoted replica (REPLICAOF NO ONE) has another run_id: restore grace, writes it lacks are refused, the fence moves on", async () => {
    const [primary, replica] = await Promise.all([launchRedis(), launchRedis()]);
    try {
      const pAdmin = await connect(primary.url);
      const rAdmin = await connect(replica.url);
      const onPrimary = new RedisLeaseBackend({ client: await connect(primary.url), keyPrefix: "f:" });
      await rAdmin.call("REPLICAOF", "127.0.0.1", String(primary.port));
      const resource = newResource();
      const k = (suffix: string) => key("f:", resource, suffix);
      await onPrimary.ensurePlan(resource, LONG, { history: "fresh", ...CALL });
      const a = await lease(onPrimary, resource, [1], "holder-a", LONG_STORED);
      for (;;) {
        if ((await info(rAdmin, "replication", "master_link_status")) === "up" && (await pAdmin.call("WAIT", "1", "1000")) === 1) break;
        await sleep(50);
      }
      expect(await rAdmin.get(k("p:1"))).toBe(await pAdmin.get(k("p:1")));
      await rAdmin.call("REPLICAOF", "NO", "ONE");
      // Written on the old primary after the promotion: the promoted replica lacks it.
      const b = await lease(onPrimary, resource, [2], "holder-b", LONG_STORED);

      const onReplica = new RedisLeaseBackend({ client: await connect(replica.url), keyPrefix: "f:" });
      expect(await rAdmin.get(k("server"))).toBe(await info(pAdmin, "server", "run_id"));
      const started = Date.now();
      const hb = await onReplica.heartbeat({ resource, plan: LONG_STORED, holder: record("holder-a", [1, 2]), leases: [a, b] }, CALL);
      expect(hb.renewed).toEqual([true, false]);
      expect(hb.graceMs).toBeGreaterThan(RESTORE_GRACE - (Date.now() - started) - 500);
      expect(await rAdmin.get(k("server"))).toBe(await info(rAdmin, "server", "run_id"));
      expect((await acquire(onReplica, resource, [2], "holder-c", LONG_STORED)).kind).toBe("grace");
      await rAdmin.del(k("grace"));
      const c = await lease(onReplica, resource, [2], "holder-c", LONG_STORED);
      expect(c.fencingToken!).toBeGreaterThan(b.fencingToken!);
    } finally {
      await Promise.all([primary.stop(), replica.stop()]);
    }
  });

  test("DEBUG RELOAD (saves, then reloads in the same process) keeps run_id and every key: nothing is forgotten, no grace, leases renew", async () => {
    // The test servers run with Redis 7's default `enable-debug-command no`, which cannot be
    // changed at runtime: this case starts its own redis-server with DEBUG allowed locally.
    const binary = ensureBinary("redis-server", "redis-server", "REDIS_URL");
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), "prl-redis-debug-"));
    const proc = spawn(binary, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--enable-debug-command", "local"], { stdio: "ignore" });
    try {
      await waitForPort(port, "redis-server with DEBUG enabled");
      const url = `redis://127.0.0.1:${port}`;
      const admin = await connect(url);
      const backend = new RedisLeaseBackend({ client: await connect(url), keyPrefix: "d:" });
      const resource = newResource();
      await backend.ensurePlan(resource, LONG, { history: "fresh", ...CALL });
      const a = await lease(backend, resource, [1], "holder-a", LONG_STORED);
      const runId = await info(admin, "server", "run_id");
      expect(await admin.call("DEBUG", "RELOAD")).toBe("OK");
      expect(await info(admin, "server", "run_id")).toBe(runId);
      const hb = await beat(backend, resource, "holder-a", [a], LONG_STORED);
      expect([hb.renewed, hb.graceMs]).toEqual([[true], 0]);
      expect((await lease(backend, resource, [1, 2], "holder-b", LONG_STORED)).partition).toBe(2);
    } finally {
      const exited = new Promise((resolve) => proc.once("exit", resolve));
      proc.kill("SIGKILL");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("RedisLeaseBackend fresh fast path: a new resource starts without a grace only where the server proves it never granted on it", () => {
  test("the machine's Redis on 127.0.0.1:6379 (up longer than the grace): no trace, no grace; a tombstone or a leftover partition key, the grace", async () => {
    const admin = await connect("redis://127.0.0.1:6379");
    // A prefix of its own on the machine's server; every key under it is deleted at the end.
    const prefix = `prl-unit-${randomUUID().slice(0, 8)}:`;
    const backend = new RedisLeaseBackend({ client: await connect("redis://127.0.0.1:6379"), keyPrefix: prefix });
    try {
      const grace = creationGraceMs(PLAN, "unknown");
      const uptime = Number(await info(admin, "server", "uptime_in_seconds"));
      if (uptime * 1000 < grace + 2000) throw new Error(`the Redis on 127.0.0.1:6379 is up ${uptime} s only; this test needs more than ${grace / 1000 + 2} s`);
      expect(await info(admin, "replication", "role")).toBe("master");

      const fresh = newResource();
      expect(await backend.ensurePlan(fresh, PLAN, { history: "unknown", ...CALL })).toEqual(STORED);
      expect((await backend.inspect(fresh, CALL)).graceMs).toBe(0);
      expect((await acquire(backend, fresh, [0])).kind).toBe("granted");

      const tombstone = newResource();
      await backend.ensurePlan(tombstone, PLAN, { history: "fresh", ...CALL });
      await backend.deletePlan(tombstone, CALL);
      await admin.del(key(prefix, tombstone, "grace"));
      expect(await backend.ensurePlan(tombstone, PLAN, { history: "unknown", ...CALL })).toEqual({ plan: PLAN, epoch: 2 });
      expect(await admin.pttl(key(prefix, tombstone, "grace"))).toBeGreaterThan(grace - 1000);

      const leftover = newResource();
      await admin.set(`${key(prefix, leftover, "p:")}3`, `${randomUUID()}|7|1|someone`, "PX", 60_000);
      await backend.ensurePlan(leftover, PLAN, { history: "unknown", ...CALL });
      expect(await admin.pttl(key(prefix, leftover, "grace"))).toBeGreaterThan(grace - 1000);
      expect((await acquire(backend, leftover, [0])).kind).toBe("grace");
    } finally {
      const keys = await scanKeys(admin, `${prefix}*`);
      if (keys.length > 0) await admin.del(...keys);
      expect(await scanKeys(admin, `${prefix}*`)).toEqual([]);
    }
  });

  test("a server up for less than the grace: grace; past it ('lost' history, grace = the TTL): none; 'fresh' never has one", async () => {
    const own = await launchRedis();
    try {
      const admin = await connect(own.url);
      const backend = new RedisLeaseBackend({ client: await connect(own.url), keyPrefix: "u:" });
      // The scripts need uptime - 1 s > the grace, in whole seconds: with a 1 s grace, 3 s.
      expect(Number(await info(admin, "server", "uptime_in_seconds"))).toBeLessThanOrEqual(1);
      const early = newResource();
      await backend.ensurePlan(early, PLAN, { history: "lost", ...CALL });
      const left = await admin.pttl(key("u:", early, "grace"));
      expect(left).toBeGreaterThan(PLAN.leaseTtlMs - 500);
      expect(left).toBeLessThanOrEqual(PLAN.leaseTtlMs);
      const unknown = newResource();
      await backend.ensurePlan(unknown, PLAN, { history: "unknown", ...CALL });
      expect(await admin.pttl(key("u:", unknown, "grace"))).toBeGreaterThan(unknownHistoryGraceMs(PLAN) - 1000);
      const asserted = newResource();
      await backend.ensurePlan(asserted, PLAN, { history: "fresh", ...CALL });
      expect(await admin.exists(key("u:", asserted, "grace"))).toBe(0);

      await uptimeAtLeast(admin, 3);
      const later = newResource();
      await backend.ensurePlan(later, PLAN, { history: "lost", ...CALL });
      expect(await admin.exists(key("u:", later, "grace"))).toBe(0);
      expect((await acquire(backend, later, [0])).kind).toBe("granted");
      // Still within the unknown-history grace of the server's start.
      const stillUnknown = newResource();
      await backend.ensurePlan(stillUnknown, PLAN, { history: "unknown", ...CALL });
      expect(await admin.pttl(key("u:", stillUnknown, "grace"))).toBeGreaterThan(unknownHistoryGraceMs(PLAN) - 1000);
    } finally {
      await own.stop();
    }
  });

  test("a promoted replica (second_repl_offset set) may lack writes: grace although up longer than it; its old primary: none", async () => {
    const [primary, replica] = await Promise.all([launchRedis(), launchRedis()]);
    try {
      const pAdmin = await connect(primary.url);
      const rAdmin = await connect(replica.url);
      await rAdmin.call("REPLICAOF", "127.0.0.1", String(primary.port));
      while ((await info(rAdmin, "replication", "master_link_status")) !== "up") await sleep(50);
      await rAdmin.call("REPLICAOF", "NO", "ONE");
      expect(await info(rAdmin, "replication", "second_repl_offset")).not.toBe("-1");
      expect(await info(pAdmin, "replication", "second_repl_offset")).toBe("-1");
      await Promise.all([uptimeAtLeast(pAdmin, 3), uptimeAtLeast(rAdmin, 3)]);

      const onReplica = new RedisLeaseBackend({ client: await connect(replica.url), keyPrefix: "u:" });
      const onPrimary = new RedisLeaseBackend({ client: await connect(primary.url), keyPrefix: "u:" });
      const a = newResource();
      await onReplica.ensurePlan(a, PLAN, { history: "lost", ...CALL });
      expect(await rAdmin.pttl(key("u:", a, "grace"))).toBeGreaterThan(PLAN.leaseTtlMs - 500);
      const b = newResource();
      await onPrimary.ensurePlan(b, PLAN, { history: "lost", ...CALL });
      expect(await pAdmin.exists(key("u:", b, "grace"))).toBe(0);
    } finally {
      await Promise.all([primary.stop(), replica.stop()]);
    }
  });
});

describe("RedisLeaseBackend against a server that dies", () => {
  test("replacePlan and deletePlan that timed out against a paused server write nothing once it resumes", async () => {
    const own = await launchRedis();
    try {
      const admin = await connect(own.url);
      const backend = new RedisLeaseBackend({ client: await connect(own.url), keyPrefix: "p:" });
      const resource = newResource();
      await backend.ensurePlan(resource, PLAN, { history: "fresh", ...CALL });
      own.pause();
      try {
        // Both read the plan first; the reads wait in the paused server's socket.
        await expect(backend.replacePlan(resource, validatePlan({ ...PLAN, limit: 50 }), { timeoutMs: 300 })).rejects.toBeInstanceOf(TimeoutError);
        await expect(backend.deletePlan(resource, { timeoutMs: 300 })).rejects.toBeInstanceOf(TimeoutError);
      } finally {
        own.resume();
      }
      // The late reads are answered now; nothing may follow them.
      await sleep(300);
      expect(await admin.get(key("p:", resource, "plan"))).toBe(encodeStoredPlan(STORED));
      expect(await admin.exists(key("p:", resource, "grace"))).toBe(0);
    } finally {
      await own.stop();
    }
  });

  test("paused: calls fail with TimeoutError at about timeoutMs; killed: fail fast with BackendError; restarted empty: PlanMissingError, then a grace", async () => {
    const own = await launchRedis();
    let client: Redis | undefined;
    try {
      const redis = await connect(own.url, { commandTimeout: 700, disconnectTimeout: 50 });
      client = redis;
      const backend = new RedisLeaseBackend({ client: redis });
      const resource = newResource();
      await backend.ensurePlan(resource, LONG, { history: "fresh", ...CALL });
      const before = await lease(backend, resource, [0], "holder-a", LONG_STORED);

      own.pause();
      let started = performance.now();
      await expect(backend.tryAcquire({ resource, plan: LONG_STORED, candidates: [1], holderId: "a" }, { timeoutMs: 500 })).rejects.toBeInstanceOf(TimeoutError);
      const pausedMs = performance.now() - started;
      expect(pausedMs).toBeGreaterThanOrEqual(450);
      expect(pausedMs).toBeLessThan(1500);

      await own.kill();
      started = performance.now();
      const killed = await backend.tryAcquire({ resource, plan: LONG_STORED, candidates: [1], holderId: "a" }, { timeoutMs: 500 }).catch((e: unknown) => e);
      const killedMs = performance.now() - started;
      expect(killed).toBeInstanceOf(BackendError);
      expect(killedMs).toBeLessThan(600);
      started = performance.now();
      const later = await backend.heartbeat({ resource, plan: LONG_STORED, holder: record("holder-a", [0]), leases: [before] }, { timeoutMs: 500 }).catch((e: unknown) => e);
      const laterMs = performance.now() - started;
      expect(later instanceof BackendError || later instanceof TimeoutError).toBe(true);
      expect(laterMs).toBeLessThan(600);
      process.stdout.write(
        `[redis] dead-server failure time, timeoutMs 500: SIGSTOP'd ${pausedMs.toFixed(0)} ms (TimeoutError); ` +
          `killed ${killedMs.toFixed(1)} ms (${(killed as Error).message}); killed, next call ${laterMs.toFixed(1)} ms\n`,
      );

      await own.restart();
      await ready(redis);
      await expect(acquire(backend, resource, [0], "a", LONG_STORED)).rejects.toBeInstanceOf(PlanMissingError);
      const hb = await backend.heartbeat({ resource, plan: LONG_STORED, holder: record("holder-a", [0]), leases: [before] }, CALL);
      expect([hb.renewed, hb.samePlan, hb.epoch, hb.holders]).toEqual([[false], false, null, []]);
      // The holder vouches that every forgotten lease was of this plan: the grace is one TTL.
      const short = await backend.ensurePlan(resource, PLAN, { history: "lost", ...CALL });
      expect(short).toEqual(STORED);
      const during = await acquire(backend, resource, [0], "a");
      expect(during.kind).toBe("grace");
      expect((during as { remainingMs: number }).remainingMs).toBeLessThanOrEqual(PLAN.leaseTtlMs);
      await sleep((during as { remainingMs: number }).remainingMs + 50);
      const after = await lease(backend, resource, [0], "a");
      // The fence counter restarts from the server's time, so it still grows across the restart.
      expect(after.fencingToken!).toBeGreaterThan(before.fencingToken!);
    } finally {
      if (client) await disconnect(client);
      await own.stop();
    }
  });
});
