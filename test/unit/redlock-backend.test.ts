import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import type { AcquireResult, HolderRecord, Lease } from "../../src/contract/lease-backend.js";
import { encodeStoredPlan, validatePlan, type StoredPlan } from "../../src/contract/plan.js";
import { backendEpochGraceMs, creationGraceMs } from "../../src/contract/timing.js";
import { BackendError } from "../../src/errors/backend-error.js";
import { ConfigError } from "../../src/errors/config-error.js";
import { PlanMismatchError } from "../../src/errors/plan-mismatch-error.js";
import { PlanMissingError } from "../../src/errors/plan-missing-error.js";
import { TimeoutError } from "../../src/errors/timeout-error.js";
import { RedlockLeaseBackend } from "../../src/lease-backends/redlock.js";
import { launchRedis, type RedisServer } from "../support/servers/redis.js";

// RedlockLeaseBackend over three real redis-servers: quorum decisions, splits, repairs, and what
// a stalled, killed, restarted or restored minority (or majority) does to each call.

/** TTL 5 s: leases outlive a server restart. */
const PLAN = validatePlan({ limit: 100, intervalMs: 1000, partitions: 10, leaseTtlMs: 5000 });
const STORED: StoredPlan = { plan: PLAN, epoch: 1 };
const OTHER = validatePlan({ ...PLAN, limit: 7 });
const CALL = { timeoutMs: 5000 };
/** A grant of someone else's, in the stored format. */
const FOREIGN = "00000000-0000-0000-0000-000000000000|1|1|someone-else";

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
  client.on("error", () => undefined);
  all.push(client);
  await client.connect();
  return client;
}

const key = (resource: string, suffix: string) => `t:{${resource}}:${suffix}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const until = async (what: string, check: () => Promise<boolean>, ms = 5000) => {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
};
const ready = (client: Redis) => until("a client to reconnect", async () => client.status === "ready");

function record(holderId: string, held: number[] = []): HolderRecord {
  return { holderId, pool: null, wants: held.length, weight: 1, reserve: 0, held, demand: 0, rate: 0 };
}
function acquire(candidates: number[], holderId: string, resource: string, plan = STORED, via = backend): Promise<AcquireResult> {
  return via.tryAcquire({ resource, plan, candidates, holderId }, CALL);
}
async function lease(candidates: number[], holderId: string, resource: string, plan = STORED): Promise<Lease> {
  const result = await acquire(candidates, holderId, resource, plan);
  if (result.kind !== "granted") throw new Error(`expected a grant of ${candidates.join(",")}, got ${JSON.stringify(result)}`);
  return result.lease;
}
function beat(holderId: string, leases: Lease[], resource: string, plan = STORED, opts = CALL) {
  return backend.heartbeat({ resource, plan, holder: record(holderId, leases.map((l) => l.partition)), leases }, opts);
}

/** Makes every script on `admin`'s server fail for `resource`: a hash where the server mark goes (WRONGTYPE). */
async function breakScripts(admin: Redis, resource: string): Promise<void> {
  await admin.del(key(resource, "server"));
  await admin.hset(key(resource, "server"), "x", "1");
}

async function newResource(): Promise<string> {
  const resource = `rl-${randomUUID().slice(0, 8)}`;
  expect(await backend.ensurePlan(resource, PLAN, { history: "fresh", ...CALL })).toEqual(STORED);
  return resource;
}

/**
 * Commands clients sent to one server during `action`, by name, seen through MONITOR (commands a
 * script runs inside Redis are left out). `admin` must be idle during `action`.
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

beforeAll(async () => {
  // Their own servers whatever REDLOCK_URLS says: these tests pause and kill them.
  servers = await Promise.all([launchRedis(), launchRedis(), launchRedis()]);
  clients = await Promise.all(servers.map((s) => connect(s.url)));
  admins = await Promise.all(servers.map((s) => connect(s.url)));
  backend = new RedlockLeaseBackend({ clients, keyPrefix: "t:" });
});
afterAll(async () => {
  for (const c of all) c.disconnect();
  await Promise.all((servers ?? []).map((s) => s.stop()));
});

describe("RedlockLeaseBackend options", () => {
  test("needs three distinct clients without offline queue; no driftFactor of its own; retryCount and keyPrefix in range", () => {
    const option = (fn: () => unknown) => {
      try {
        fn();
      } catch (error) {
        expect(error).toBeInstanceOf(ConfigError);
        return (error as ConfigError).option;
      }
      throw new Error("no ConfigError");
    };
    expect(() => new RedlockLeaseBackend({ clients: clients.slice(0, 2) })).toThrow(/at least 3/);
    expect(option(() => new RedlockLeaseBackend({ clients: clients.slice(0, 2) }))).toBe("clients");
    expect(() => new RedlockLeaseBackend({ clients: [clients[0]!, clients[0]!, clients[1]!] })).toThrow(/distinct/);
    const queued = new Redis(servers[0]!.url, { lazyConnect: true });
    all.push(queued);
    expect(option(() => new RedlockLeaseBackend({ clients: [queued, clients[1]!, clients[2]!] }))).toBe("clients[0].options.enableOfflineQueue");
    expect(option(() => new RedlockLeaseBackend({ clients, ...({ driftFactor: 0.01 } as object) }))).toBe("driftFactor");
    expect(option(() => new RedlockLeaseBackend({ clients, retryCount: 1.5 }))).toBe("retryCount");
    expect(option(() => new RedlockLeaseBackend({ clients, retryCount: 11 }))).toBe("retryCount");
    expect(option(() => new RedlockLeaseBackend({ clients, keyPrefix: "{" }))).toBe("keyPrefix");
  });
});

describe("RedlockLeaseBackend quorum", () => {
  test("a lease is on every server; each call is one EVALSHA per server (readPlan one GET; replacePlan and deletePlan read first)", async () => {
    const resource = await newResource();
    // Warm-up: every server caches the scripts (the first use of one costs an extra EVAL).
    const warm = await lease([9], "warm", resource);
    await beat("warm", [warm], resource);
    await backend.release(warm, CALL);
    await backend.inspect(resource, CALL);
    const scratch = await newResource();
    await backend.replacePlan(scratch, PLAN, CALL);
    await backend.deletePlan(scratch, CALL);

    const one = { evalsha: 1 };
    const admin = admins[1]!;
    let a = null as Lease | null;
    expect(await countCommands(admin, async () => (a = await lease([4, 5], "a", resource)))).toEqual(one);
    expect(a).toMatchObject({ partition: 4, fencingToken: null, epoch: 1, holderId: "a" });
    for (const adm of admins) expect(await adm.get(key(resource, "p:4"))).toMatch(new RegExp(`^${a!.token}\\|\\d+\\|1\\|a$`));
    const b = await lease([5], "a", resource);
    expect(await countCommands(admin, async () => expect((await beat("a", [a!, b], resource)).renewed).toEqual([true, true]))).toEqual(one);
    expect(await countCommands(admin, () => backend.release(a!, CALL))).toEqual(one);
    expect(await countCommands(admin, () => backend.inspect(resource, CALL))).toEqual(one);
    expect(await countCommands(admin, () => backend.ensurePlan(resource, PLAN, { history: "fresh", ...CALL }))).toEqual(one);
    expect(await countCommands(admin, () => backend.readPlan(resource, CALL))).toEqual({ get: 1 });
    expect(await countCommands(admin, () => backend.replacePlan(resource, OTHER, CALL))).toEqual({ get: 1, evalsha: 1 });
    expect(await countCommands(admin, () => backend.deletePlan(resource, CALL))).toEqual({ get: 1, evalsha: 1 });
    for (const adm of admins) expect(await adm.exists(key(resource, "p:4"))).toBe(0);
  });

  test("servers that grant different partitions: the quorum's partition is kept, the odd grant released", async () => {
    const resource = await newResource();
    await admins[0]!.set(key(resource, "p:0"), FOREIGN, "PX", 60_000);
    const a = await lease([0, 1], "a", resource);
    expect(a.partition).toBe(0);
    await until("the minority grant of partition 1 to be released", async () => (await admins[0]!.exists(key(resource, "p:1"))) === 0);
    expect(await admins[1]!.get(key(resource, "p:0"))).toContain(a.token);
    expect(await admins[2]!.get(key(resource, "p:0"))).toContain(a.token);
    const state = await backend.inspect(resource, CALL);
    expect(state.partitions[0]).toMatchObject({ holderId: "a", fencingToken: null, epoch: 1 });
    expect(state.partitions[1]).toMatchObject({ holderId: null });
  });

  test("a three-way split grants nothing and leaves nothing behind", async () => {
    const resource = await newResource();
    // Candidates [0, 1, 2]: server 0 would grant 1, server 1 would grant 2, server 2 would grant 0.
    await admins[0]!.set(key(resource, "p:0"), FOREIGN, "PX", 60_000);
    await admins[1]!.set(key(resource, "p:0"), FOREIGN, "PX", 60_000);
    await admins[1]!.set(key(resource, "p:1"), FOREIGN, "PX", 60_000);
    const split = new RedlockLeaseBackend({ clients, keyPrefix: "t:", retryCount: 1 });
    expect(await acquire([0, 1, 2], "a", resource, STORED, split)).toEqual({ kind: "taken" });
    await until("every odd grant to be released", async () =>
      (await admins[0]!.exists(key(resource, "p:1"))) + (await admins[1]!.exists(key(resource, "p:2"))) + (await admins[2]!.exists(key(resource, "p:0"))) === 0,
    );
    expect(await admins[0]!.get(key(resource, "p:0"))).toBe(FOREIGN);
  });

  test("the grace reported is the quorum-th smallest of the servers' (when a quorum is out of it): exact in heartbeat and inspect, never more in tryAcquire", async () => {
    const resource = await newResource();
    await admins[0]!.set(key(resource, "grace"), "1", "PX", 30_000);
    await admins[1]!.set(key(resource, "grace"), "1", "PX", 10_000);
    // Server 2 grants, the others are in grace: no quorum, and the grant is given back.
    const first = await acquire([3], "a", resource);
    expect(first.kind).toBe("grace");
    const within = (ms: number, target: number) => {
      expect(ms).toBeLessThanOrEqual(target);
      expect(ms).toBeGreaterThan(target - 1000);
    };
    within((first as { remainingMs: number }).remainingMs, 10_000);
    await until("server 2's grant to be released", async () => (await admins[2]!.exists(key(resource, "p:3"))) === 0);
    within((await beat("a", [], resource)).graceMs, 10_000);
    within((await backend.inspect(resource, CALL)).graceMs, 10_000);
    await admins[2]!.set(key(resource, "grace"), "1", "PX", 20_000);
    // tryAcquire may decide on the first two graces, the third server counted as out of grace: "nothing
    // is granted for remainingMs" stays true, it is only a shorter wait before the next try.
    const second = await acquire([3], "a", resource);
    expect(second.kind).toBe("grace");
    expect((second as { remainingMs: number }).remainingMs).toBeLessThanOrEqual(20_000);
    expect((second as { remainingMs: number }).remainingMs).toBeGreaterThan(9000);
    within((await beat("a", [], resource)).graceMs, 20_000);
    within((await backend.inspect(resource, CALL)).graceMs, 20_000);
    // One server alone in grace: the other two grant.
    await admins[0]!.del(key(resource, "grace"));
    await admins[1]!.del(key(resource, "grace"));
    expect((await acquire([3], "a", resource)).kind).toBe("granted");
    expect((await beat("a", [], resource)).graceMs).toBe(0);
  });

  test("a request under another stored plan with the same epoch number is refused on every server", async () => {
    const resource = await newResource();
    const a = await lease([0], "a", resource);
    const other: StoredPlan = { plan: validatePlan({ ...PLAN, slicesPerInterval: 5 }), epoch: 1 };
    expect(await acquire([1], "b", resource, other)).toEqual({ kind: "plan-changed", epoch: 1 });
    const before = await Promise.all(admins.map((adm) => adm.pttl(key(resource, "p:0"))));
    await sleep(30);
    const hb = await beat("a", [a], resource, other);
    expect([hb.renewed, hb.samePlan, hb.epoch]).toEqual([[false], false, 1]);
    for (const [i, adm] of admins.entries()) {
      expect(await adm.exists(key(resource, "p:1"))).toBe(0);
      expect(await adm.pttl(key(resource, "p:0"))).toBeLessThan(before[i]!);
    }
  });
});

describe("RedlockLeaseBackend plans", () => {
  test("ensurePlan repairs a server whose plan differs from the majority's to the exact text and epoch, with a grace there", async () => {
    const resource = await newResource();
    await admins[2]!.set(key(resource, "plan"), encodeStoredPlan({ plan: OTHER, epoch: 4 }));
    await admins[2]!.set(key(resource, "epoch"), "4");
    expect(await backend.ensurePlan(resource, PLAN, { history: "fresh", ...CALL })).toEqual(STORED);
    for (const adm of admins) expect(await adm.get(key(resource, "plan"))).toBe(encodeStoredPlan(STORED));
    expect(await admins[2]!.get(key(resource, "epoch"))).toBe("1");
    // At least a TTL on the repaired server (its leases may be of the other plan); none elsewhere.
    const grace = await admins[2]!.pttl(key(resource, "grace"));
    expect(grace).toBeGreaterThan(PLAN.leaseTtlMs - 1000);
    expect(grace).toBeLessThanOrEqual(PLAN.leaseTtlMs);
    expect(await admins[0]!.exists(key(resource, "grace"))).toBe(0);
    expect(await admins[1]!.exists(key(resource, "grace"))).toBe(0);
    // The two others make a quorum meanwhile.
    expect((await acquire([0], "a", resource)).kind).toBe("granted");

    // Unreadable on one server, missing on none: repaired, with the grace of the caller's history.
    const second = await newResource();
    await admins[0]!.set(key(second, "plan"), "{not json");
    expect(await backend.ensurePlan(second, PLAN, { history: "unknown", ...CALL })).toEqual(STORED);
    expect(await admins[0]!.get(key(second, "plan"))).toBe(encodeStoredPlan(STORED));
    expect(await admins[0]!.pttl(key(second, "grace"))).toBeGreaterThan(creationGraceMs(PLAN, "unknown") - 1000);

    // Missing on one server: stored there with the majority's epoch.
    const third = await newResource();
    await backend.replacePlan(third, PLAN, CALL);
    await admins[1]!.del(key(third, "plan"));
    expect(await backend.ensurePlan(third, PLAN, { history: "fresh", ...CALL })).toEqual({ plan: PLAN, epoch: 2 });
    expect(await admins[1]!.get(key(third, "plan"))).toBe(encodeStoredPlan({ plan: PLAN, epoch: 2 }));
    expect(await admins[1]!.pttl(key(third, "grace"))).toBeGreaterThan(0);
  });

  test("a plan a quorum stores but nobody can read (empty, not JSON): PlanMismatchError from reads, nothing granted; replacePlan repairs it", async () => {
    for (const text of ["", "{not json"]) {
      const resource = `rl-${randomUUID().slice(0, 8)}`;
      for (const adm of admins) await adm.set(key(resource, "plan"), text);
      await expect(backend.readPlan(resource, CALL)).rejects.toBeInstanceOf(PlanMismatchError);
      await expect(backend.inspect(resource, CALL)).rejects.toBeInstanceOf(PlanMismatchError);
      await expect(backend.ensurePlan(resource, PLAN, { history: "fresh", ...CALL })).rejects.toBeInstanceOf(PlanMismatchError);
      expect((await acquire([0], "a", resource)).kind).not.toBe("granted");
      for (const adm of admins) expect(await adm.exists(key(resource, "p:0"))).toBe(0);
      expect(await backend.replacePlan(resource, PLAN, CALL)).toEqual(STORED);
      for (const adm of admins) expect(await adm.pttl(key(resource, "grace"))).toBeGreaterThan(creationGraceMs(PLAN, "unknown") - 5000);
      expect(await backend.readPlan(resource, CALL)).toEqual(STORED);
    }
  });

  test("heartbeat does not extend a lease of an older epoch on any server, even sent with the new plan", async () => {
    const resource = await newResource();
    const a = await lease([0], "a", resource);
    const next = await backend.replacePlan(resource, validatePlan({ ...PLAN, leaseTtlMs: 20_000 }), CALL);
    const before = await Promise.all(admins.map((adm) => adm.pttl(key(resource, "p:0"))));
    const hb = await backend.heartbeat({ resource, plan: next, holder: record("a", [0]), leases: [a] }, CALL);
    expect([hb.renewed, hb.samePlan, hb.epoch]).toEqual([[false], true, 2]);
    for (const [i, adm] of admins.entries()) expect(await adm.pttl(key(resource, "p:0"))).toBeLessThanOrEqual(before[i]!);
  });

  test("ensurePlan where no two servers store the same plan fails, changing nothing", async () => {
    const resource = await newResource();
    await admins[1]!.set(key(resource, "plan"), encodeStoredPlan({ plan: OTHER, epoch: 1 }));
    await admins[2]!.set(key(resource, "plan"), encodeStoredPlan({ plan: OTHER, epoch: 2 }));
    const error = await backend.ensurePlan(resource, PLAN, { history: "fresh", ...CALL }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BackendError);
    expect((error as Error).message).toMatch(/different plans/);
    expect(await admins[0]!.get(key(resource, "plan"))).toBe(encodeStoredPlan(STORED));
    expect(await admins[2]!.get(key(resource, "plan"))).toBe(encodeStoredPlan({ plan: OTHER, epoch: 2 }));
  });

  test("replacePlan needs a quorum: fewer servers that answer, or take it, fail the call; a call that timed out writes nothing later", async () => {
    const resource = await newResource();
    servers[1]!.pause();
    servers[2]!.pause();
    try {
      await expect(backend.replacePlan(resource, OTHER, { timeoutMs: 500 })).rejects.toBeInstanceOf(TimeoutError);
    } finally {
      servers[1]!.resume();
      servers[2]!.resume();
    }
    // The late reads are answered now; the call that gave up must not go on to write.
    await sleep(300);
    for (const adm of admins) expect(await adm.get(key(resource, "plan"))).toBe(encodeStoredPlan(STORED));

    // Scripts fail on servers 1 and 2 (a key of the wrong type where the server mark goes).
    for (const adm of [admins[1]!, admins[2]!]) await breakScripts(adm, resource);
    await expect(backend.replacePlan(resource, OTHER, CALL)).rejects.toBeInstanceOf(BackendError);
    // The majority still stores epoch 1 (server 0 took epoch 2).
    expect(await backend.readPlan(resource, CALL)).toEqual(STORED);
    expect(await admins[0]!.get(key(resource, "plan"))).toBe(encodeStoredPlan({ plan: OTHER, epoch: 2 }));
    await admins[1]!.del(key(resource, "server"));
    await admins[2]!.del(key(resource, "server"));
    // With every server answering it goes through (server 0 is brought along from its own text).
    expect(await backend.replacePlan(resource, OTHER, CALL)).toEqual({ plan: OTHER, epoch: 2 });
    for (const adm of admins) expect(await adm.get(key(resource, "plan"))).toBe(encodeStoredPlan({ plan: OTHER, epoch: 2 }));
  });

  test("deletePlan needs a quorum: servers that disagree or fail make it reject, never report 'none' for a stored plan", async () => {
    const differ = await newResource();
    await admins[1]!.set(key(differ, "plan"), encodeStoredPlan({ plan: OTHER, epoch: 1 }));
    await admins[2]!.set(key(differ, "plan"), encodeStoredPlan({ plan: OTHER, epoch: 2 }));
    await expect(backend.deletePlan(differ, CALL)).rejects.toBeInstanceOf(BackendError);
    for (const adm of admins) expect(await adm.exists(key(differ, "plan"))).toBe(1);

    const failing = await newResource();
    for (const adm of [admins[1]!, admins[2]!]) await breakScripts(adm, failing);
    await expect(backend.deletePlan(failing, CALL)).rejects.toBeInstanceOf(BackendError);
    expect(await admins[1]!.exists(key(failing, "plan"))).toBe(1);

    const paused = await newResource();
    servers[0]!.pause();
    servers[1]!.pause();
    try {
      await expect(backend.deletePlan(paused, { timeoutMs: 500 })).rejects.toBeInstanceOf(TimeoutError);
    } finally {
      servers[0]!.resume();
      servers[1]!.resume();
    }

    // A server without the plan counts with the quorum that deletes it.
    const minority = await newResource();
    await admins[2]!.del(key(minority, "plan"));
    expect(await backend.deletePlan(minority, CALL)).toBe(true);
    expect(await backend.readPlan(minority, CALL)).toBeNull();
    for (const adm of admins) expect(await adm.exists(key(minority, "plan"))).toBe(0);
    expect(await backend.deletePlan(minority, CALL)).toBe(false);
  });
});

describe("RedlockLeaseBackend with failing servers", () => {
  test("a minority server restored from a snapshot is outvoted: leases it forgot renew, what it resurrected is granted again", async () => {
    const resource = await newResource();
    const k = await lease([2], "k", resource);
    await servers[0]!.save();
    await backend.release(k, CALL);
    // Granted after the snapshot: server 0 forgets it.
    const a = await lease([1], "a", resource);
    await servers[0]!.restartFromSnapshot();
    await Promise.all([ready(clients[0]!), ready(admins[0]!)]);
    expect(await admins[0]!.exists(key(resource, "p:1"))).toBe(0);
    expect(await admins[0]!.get(key(resource, "p:2"))).toContain(k.token);

    const hb = await beat("a", [a], resource);
    expect(hb.renewed).toEqual([true]);
    // Server 0 is in its restore grace, the quorum is not.
    expect(hb.graceMs).toBe(0);
    expect(await admins[0]!.pttl(key(resource, "grace"))).toBeGreaterThan(backendEpochGraceMs(PLAN) - 5000);
    expect(await acquire([1], "b", resource)).toEqual({ kind: "taken" });
    expect((await lease([2], "c", resource)).partition).toBe(2);
    const state = await backend.inspect(resource, CALL);
    expect(state.graceMs).toBe(0);
    expect([state.partitions[1]!.holderId, state.partitions[2]!.holderId]).toEqual(["a", "c"]);
  });

  test("one server paused: every call still succeeds without waiting for it", async () => {
    const resource = await newResource();
    servers[2]!.pause();
    try {
      const started = performance.now();
      const short = { timeoutMs: 1000 };
      const a = (await backend.tryAcquire({ resource, plan: STORED, candidates: [1], holderId: "a" }, short)) as { kind: string; lease: Lease };
      expect(a.kind).toBe("granted");
      expect((await beat("a", [a.lease], resource, STORED, short)).renewed).toEqual([true]);
      expect(await backend.readPlan(resource, short)).toEqual(STORED);
      expect((await backend.inspect(resource, short)).partitions[1]).toMatchObject({ holderId: "a" });
      expect(await backend.ensurePlan(resource, PLAN, { history: "fresh", ...short })).toEqual(STORED);
      await backend.release(a.lease, short);
      expect(await backend.replacePlan(resource, OTHER, short)).toEqual({ plan: OTHER, epoch: 2 });
      const elapsed = performance.now() - started;
      // Seven calls; reads wait up to 100 ms for the stalled server (replacePlan twice), the others not at all.
      expect(elapsed).toBeLessThan(1500);
      process.stdout.write(`[redlock] seven calls with one of three servers SIGSTOP'd: ${elapsed.toFixed(0)} ms\n`);
    } finally {
      servers[2]!.resume();
    }
  });

  test("all paused: TimeoutError at timeoutMs; two of three killed: BackendError fast; restarted empty: PlanMissingError, then a grace there", async () => {
    const resource = await newResource();
    const a = await lease([0], "a", resource);

    for (const s of servers) s.pause();
    let started = performance.now();
    let outcome: unknown;
    try {
      outcome = await backend.tryAcquire({ resource, plan: STORED, candidates: [1], holderId: "a" }, { timeoutMs: 500 }).catch((e: unknown) => e);
    } finally {
      for (const s of servers) s.resume();
    }
    const pausedMs = performance.now() - started;
    expect(outcome).toBeInstanceOf(TimeoutError);
    expect(pausedMs).toBeGreaterThanOrEqual(450);
    expect(pausedMs).toBeLessThan(1500);

    // One server lost: the other two still make a quorum.
    await servers[0]!.kill();
    expect((await beat("a", [a], resource)).renewed).toEqual([true]);
    expect((await lease([1], "b", resource)).partition).toBe(1);

    await servers[1]!.kill();
    started = performance.now();
    const killed = await backend.tryAcquire({ resource, plan: STORED, candidates: [2], holderId: "a" }, { timeoutMs: 500 }).catch((e: unknown) => e);
    const killedMs = performance.now() - started;
    expect(killed).toBeInstanceOf(BackendError);
    expect(killedMs).toBeLessThan(600);
    await expect(beat("a", [a], resource, STORED, { timeoutMs: 500 })).rejects.toBeInstanceOf(BackendError);
    process.stdout.write(
      `[redlock] failure time, timeoutMs 500: all SIGSTOP'd ${pausedMs.toFixed(0)} ms (TimeoutError); ` +
        `2 of 3 killed ${killedMs.toFixed(1)} ms (${(killed as Error).message})\n`,
    );

    // Server 1 comes back empty, server 0 stays down: server 1 has no plan. The round finds no
    // quorum (one grant, one "no plan", one failure) and asks for the plan to be stored again.
    await servers[1]!.restart();
    await ready(clients[1]!);
    expect(await acquire([2], "a", resource)).toEqual({ kind: "taken" });
    await expect(acquire([2], "a", resource)).rejects.toBeInstanceOf(PlanMissingError);
    expect(await backend.ensurePlan(resource, PLAN, { history: "unknown", ...CALL })).toEqual(STORED);
    await ready(admins[1]!);
    expect(await admins[1]!.pttl(key(resource, "grace"))).toBeGreaterThan(creationGraceMs(PLAN, "unknown") - 5000);
    // Server 1 is in grace and server 0 down: no quorum can grant, although server 2 would.
    expect(await acquire([2], "a", resource)).toEqual({ kind: "taken" });
    // The lease on partition 0 is still on server 2 alone: not a quorum, so inspect shows it free.
    expect((await backend.inspect(resource, CALL)).partitions[0]).toMatchObject({ holderId: null });
    await admins[1]!.del(key(resource, "grace"));
    expect((await lease([2], "c", resource)).partition).toBe(2);

    await servers[0]!.restart();
    await ready(clients[0]!);
  });
});
