import { noop } from "cockatiel";
import { Etcd3 } from "etcd3";
import { BackendError } from "../../src/errors/backend-error.js";
import { ConfigError } from "../../src/errors/config-error.js";
import { PlanMissingError } from "../../src/errors/plan-missing-error.js";
import { TimeoutError } from "../../src/errors/timeout-error.js";
import { EtcdLeaseBackend } from "../../src/lease-backends/etcd.js";
import type { Lease } from "../../src/contract/lease-backend.js";
import type { Plan } from "../../src/contract/plan.js";
import { startEtcd, type EtcdServer } from "../support/servers/etcd.js";

// Real etcd on free ports, started and killed by this file (it pauses, kills and wipes it).
const PLAN: Plan = { limit: 100, intervalMs: 1000, partitions: 10, pools: {} };
const TTL = 2000;
let server: EtcdServer;
const clients: Etcd3[] = [];
let counter = 0;

function connect(options: { defaults?: boolean } = {}): Etcd3 {
  const client = options.defaults
    ? new Etcd3({ hosts: server.endpoint })
    : new Etcd3({ hosts: server.endpoint, faultHandling: { host: () => noop, global: noop } });
  clients.push(client);
  return client;
}

/** Counts the RPCs a backend sends (a spy on the real client: every call still reaches etcd). */
function countRpcs(client: Etcd3): Record<string, number> {
  const counts: Record<string, number> = {};
  const spy = (target: object, methods: string[]) => {
    const table = target as Record<string, (...args: unknown[]) => unknown>;
    for (const method of methods) {
      const original = table[method]!.bind(target);
      counts[method] = 0;
      table[method] = (...args: unknown[]) => {
        counts[method]!++;
        return original(...args);
      };
    }
  };
  spy(client.kv, ["txn", "range", "put", "deleteRange"]);
  spy(client.leaseClient, ["leaseGrant", "leaseRevoke", "leaseKeepAlive", "leaseTimeToLive"]);
  return counts;
}

function total(counts: Record<string, number>): number {
  return Object.values(counts).reduce((a, b) => a + b, 0);
}

function reset(counts: Record<string, number>): void {
  for (const k of Object.keys(counts)) counts[k] = 0;
}

async function newResource(backend: EtcdLeaseBackend): Promise<string> {
  const resource = `unit-${process.pid}-${++counter}`;
  await backend.ensurePlan(resource, PLAN, { graceMs: 0, timeoutMs: 5000 });
  return resource;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const opts = { timeoutMs: 5000 };

function report(line: string): void {
  process.stdout.write(`[etcd figures] ${line}\n`);
}

beforeAll(async () => {
  server = await startEtcd();
}, 120_000);

afterAll(async () => {
  for (const client of clients) client.close();
  await server?.stop();
});

describe("EtcdLeaseBackend", () => {
  test("rejects TTLs etcd cannot express with a ConfigError naming leaseTtlMs", async () => {
    const backend = new EtcdLeaseBackend({ client: connect() });
    const resource = await newResource(backend);
    for (const ttl of [1000, 1500, 2500, 0, -2000, Number.NaN]) {
      const error = await backend.tryAcquire(resource, [0], "h", ttl, opts).catch((e: unknown) => e);
      expect(ConfigError.is(error)).toBe(true);
      expect((error as ConfigError).option).toBe("leaseTtlMs");
    }
    const lease = await backend.tryAcquire(resource, [0], "h", TTL, opts);
    // An etcd lease keeps its TTL: renewing for longer than it was granted is refused.
    await expect(backend.renew(lease!, 3000, opts)).rejects.toMatchObject({ code: "ERR_CONFIG", option: "leaseTtlMs" });
    expect(await backend.renew(lease!, TTL, opts)).toBe(true);
    expect(() => new EtcdLeaseBackend({ client: undefined as unknown as Etcd3 })).toThrow(ConfigError);
  });

  test("round trips: tryAcquire 1 (txn + keepalive in parallel), renew 1, release 1", async () => {
    const client = connect();
    const counts = countRpcs(client);
    const backend = new EtcdLeaseBackend({ client });
    const resource = await newResource(backend);
    reset(counts);

    // The first acquire of a holder grants its etcd lease first: 2 sequential requests.
    const first = await backend.tryAcquire(resource, [0], "rt-holder", TTL, opts);
    expect(first?.partition).toBe(0);
    expect(counts).toMatchObject({ leaseGrant: 1, txn: 1 });
    expect(total(counts)).toBe(2);

    // Later acquires: one transaction with nested first-free candidates, and a keepalive sent with it.
    reset(counts);
    const second = await backend.tryAcquire(resource, [0, 1, 2], "rt-holder", TTL, opts);
    expect(second?.partition).toBe(1);
    expect(counts).toMatchObject({ txn: 1, leaseKeepAlive: 1 });
    expect(total(counts)).toBe(2);

    reset(counts);
    expect(await backend.renew(second!, TTL, opts)).toBe(true);
    expect(counts).toMatchObject({ leaseKeepAlive: 1, range: 1 });
    expect(total(counts)).toBe(2);

    // Not the last partition on the etcd lease: a compare-value delete.
    reset(counts);
    await backend.release(second!, opts);
    expect(counts).toMatchObject({ txn: 1 });
    expect(total(counts)).toBe(1);

    // The last partition: a revoke, which deletes the key with the lease.
    reset(counts);
    await backend.release(first!, opts);
    expect(counts).toMatchObject({ leaseRevoke: 1 });
    expect(total(counts)).toBe(1);
    expect(await backend.renew(first!, TTL, opts)).toBe(false);
    expect((await backend.inspect(resource, opts)).every((s) => s.holderId === null)).toBe(true);

    reset(counts);
    await backend.inspect(resource, opts);
    report(`inspect with no holders: ${total(counts)} request(s) ${JSON.stringify(counts)}`);

    // Latency of each steady-state call against this local etcd (2 cores, shared machine).
    const n = 30;
    const times = { tryAcquire: 0, renew: 0, release: 0 };
    for (let i = 0; i < n; i++) {
      const keep = await backend.tryAcquire(resource, [9], "rt-keep", TTL, opts); // keeps the etcd lease in use
      let t = performance.now();
      const lease = await backend.tryAcquire(resource, [3], "rt-keep", TTL, opts);
      times.tryAcquire += performance.now() - t;
      t = performance.now();
      await backend.renew(lease!, TTL, opts);
      times.renew += performance.now() - t;
      t = performance.now();
      await backend.release(lease!, opts);
      times.release += performance.now() - t;
      await backend.release(keep!, opts);
    }
    report(
      `mean latency over ${n}: tryAcquire ${(times.tryAcquire / n).toFixed(2)} ms, renew ${(times.renew / n).toFixed(2)} ms, release ${(times.release / n).toFixed(2)} ms`,
    );
  });

  test("more candidates than one transaction holds still finds the first free one", async () => {
    const backend = new EtcdLeaseBackend({ client: connect() });
    const resource = `unit-${process.pid}-${++counter}`;
    const big: Plan = { limit: 1000, intervalMs: 1000, partitions: 100, pools: {} };
    await backend.ensurePlan(resource, big, { graceMs: 0, timeoutMs: 5000 });
    const other = new EtcdLeaseBackend({ client: connect() });
    const order = [...Array(100).keys()].reverse();
    // Take the first 40 of the order with another holder, so the first free is deep in batch 2.
    for (let i = 0; i < 40; i++) expect((await other.tryAcquire(resource, [order[i]!], "blocker", TTL, opts))?.partition).toBe(order[i]);
    const lease = await backend.tryAcquire(resource, order, "deep", TTL, opts);
    expect(lease?.partition).toBe(order[40]);
  });

  test("a partition its holder stops renewing is freed although its etcd lease is kept alive", async () => {
    const backend = new EtcdLeaseBackend({ client: connect() });
    const other = new EtcdLeaseBackend({ client: connect() });
    const resource = await newResource(backend);
    const kept = await backend.tryAcquire(resource, [0], "sweeper", TTL, opts);
    const dropped = await backend.tryAcquire(resource, [1], "sweeper", TTL, opts);
    expect(dropped?.partition).toBe(1);
    // Renew only partition 0 for 2.5 TTLs; partition 1 must come free (per-partition lifetime).
    const until = Date.now() + 2.5 * TTL;
    let freedAt: number | null = null;
    while (Date.now() < until) {
      expect(await backend.renew(kept!, TTL, opts)).toBe(true);
      const states = await other.inspect(resource, opts);
      if (freedAt === null && states[1]!.holderId === null) freedAt = Date.now();
      await sleep(TTL / 4);
    }
    expect(freedAt).not.toBeNull();
    expect(await other.tryAcquire(resource, [1], "other", TTL, opts)).toMatchObject({ partition: 1 });
    expect(await backend.renew(dropped!, TTL, opts)).toBe(false);
    expect(await backend.renew(kept!, TTL, opts)).toBe(true);
  });

  test("fencing tokens are the key's create revision and grow across holders", async () => {
    const backend = new EtcdLeaseBackend({ client: connect() });
    const resource = await newResource(backend);
    const seen: number[] = [];
    for (let i = 0; i < 5; i++) {
      const lease = await backend.tryAcquire(resource, [2], `fence-${i}`, TTL, opts);
      const states = await backend.inspect(resource, opts);
      expect(states[2]!.fencingToken).toBe(lease!.fencingToken);
      seen.push(lease!.fencingToken!);
      await backend.release(lease!, opts);
    }
    expect([...seen].sort((a, b) => a - b)).toEqual(seen);
    expect(new Set(seen).size).toBe(seen.length);
  });

  test("close() revokes no lease that carries partitions and leaves the injected client open", async () => {
    const client = connect();
    const backend = new EtcdLeaseBackend({ client });
    const resource = await newResource(backend);
    await backend.tryAcquire(resource, [4], "closer", TTL, opts);
    await backend.close();
    await expect(backend.readPlan(resource, opts)).rejects.toBeInstanceOf(BackendError);
    const observer = new EtcdLeaseBackend({ client });
    expect((await observer.inspect(resource, opts))[4]!.holderId).toBe("closer");
  });

  test("calls against a dead server fail within their timeout, and work again after", async () => {
    const client = connect();
    const backend = new EtcdLeaseBackend({ client });
    const withDefaults = new EtcdLeaseBackend({ client: connect({ defaults: true }) });
    const resource = await newResource(backend);
    await withDefaults.readPlan(resource, opts);
    // A TTL longer than the stall below, so the lease outlives it.
    const LONG = 6000;
    const lease = await backend.tryAcquire(resource, [0], "dead", LONG, opts);

    const timed = async (b: EtcdLeaseBackend, op: "tryAcquire" | "renew" | "readPlan") => {
      const started = performance.now();
      const call =
        op === "tryAcquire"
          ? b.tryAcquire(resource, [5], "dead", LONG, { timeoutMs: 500 })
          : op === "renew"
            ? b.renew(lease!, LONG, { timeoutMs: 500 })
            : b.readPlan(resource, { timeoutMs: 500 });
      const error = await call.then(() => null, (e: unknown) => e);
      return { error, ms: performance.now() - started };
    };

    server.pause();
    try {
      for (const op of ["tryAcquire", "renew", "readPlan"] as const) {
        const r = await timed(backend, op);
        expect(r.error).toBeInstanceOf(TimeoutError);
        expect(r.ms).toBeLessThan(1500);
        report(`SIGSTOP'd server, ${op} timeoutMs 500: failed after ${r.ms.toFixed(0)} ms with ${(r.error as Error).name}`);
      }
      const d = await timed(withDefaults, "readPlan");
      expect(d.error).toBeInstanceOf(TimeoutError);
      report(`SIGSTOP'd server, default etcd3 fault handling, readPlan timeoutMs 500: failed after ${d.ms.toFixed(0)} ms`);
    } finally {
      server.resume();
    }
    expect(await backend.renew(lease!, LONG, opts)).toBe(true);

    await server.kill();
    try {
      for (const op of ["tryAcquire", "renew", "readPlan"] as const) {
        const r = await timed(backend, op);
        expect(BackendError.is(r.error) || TimeoutError.is(r.error)).toBe(true);
        expect(r.ms).toBeLessThan(1500);
        report(`killed server, ${op} timeoutMs 500: failed after ${r.ms.toFixed(0)} ms with ${(r.error as Error).name}`);
      }
      for (let i = 0; i < 4; i++) {
        const d = await timed(withDefaults, "readPlan");
        expect(BackendError.is(d.error) || TimeoutError.is(d.error)).toBe(true);
        expect(d.ms).toBeLessThan(1500);
        report(`killed server, default etcd3 fault handling, readPlan #${i + 1}: failed after ${d.ms.toFixed(0)} ms with ${(d.error as Error).name}`);
      }
    } finally {
      await server.restart();
    }
    // etcd persisted the lease: it survives a restart (etcd extends leases on recovery).
    const started = Date.now();
    let renewed: boolean | null = null;
    while (renewed === null && Date.now() - started < 10_000) {
      renewed = await backend.renew(lease!, LONG, { timeoutMs: 500 }).catch(() => null);
    }
    report(`after restart (data kept), first successful renew after ${Date.now() - started} ms: ${renewed}`);
    expect(renewed).toBe(true);
    const recover = Date.now();
    let plan = null;
    while (plan === null && Date.now() - recover < 15_000) plan = await withDefaults.readPlan(resource, { timeoutMs: 500 }).catch(() => null);
    report(`after restart, default etcd3 fault handling recovered after ${Date.now() - recover} ms`);
    expect(plan).toEqual(PLAN);
  });

  test("after the server loses its state: PlanMissingError, old leases lost, grace on the new plan", async () => {
    const backend = new EtcdLeaseBackend({ client: connect() });
    const resource = await newResource(backend);
    const old: Lease | null = await backend.tryAcquire(resource, [0, 1], "wiped", TTL, opts);
    expect(old?.partition).toBe(0);

    await server.restart({ wipe: true });
    const retry = async <T>(fn: () => Promise<T>): Promise<T> => {
      const deadline = Date.now() + 10_000;
      for (;;) {
        try {
          return await fn();
        } catch (error) {
          if (Date.now() > deadline || !(BackendError.is(error) || TimeoutError.is(error))) throw error;
          await sleep(100);
        }
      }
    };
    await expect(retry(() => backend.tryAcquire(resource, [0], "wiped", TTL, opts))).rejects.toBeInstanceOf(PlanMissingError);
    expect(await retry(() => backend.renew(old!, TTL, opts))).toBe(false);
    await backend.ensurePlan(resource, PLAN, { graceMs: 2000, timeoutMs: 5000 });
    const graceStarted = Date.now();
    expect(await backend.tryAcquire(resource, [0], "wiped", TTL, opts)).toBeNull();
    let lease: Lease | null = null;
    while (!lease && Date.now() - graceStarted < 10_000) {
      lease = await backend.tryAcquire(resource, [0], "wiped", TTL, opts);
      if (!lease) await sleep(100);
    }
    // The grace key's etcd lease is 2 s from its grant, which preceded the plan's store.
    expect(Date.now() - graceStarted).toBeGreaterThanOrEqual(1500);
    expect(lease?.partition).toBe(0);
    // A new etcd lease was granted for the holder (the old one died with the state).
    expect(lease!.token.split(".")[0]).not.toBe(old!.token.split(".")[0]);
  });
});
