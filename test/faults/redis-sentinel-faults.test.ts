import { ClusterReport, HeldTimeline, rateBackMs, utilisationOf } from "../support/cluster-rows.js";
import { FaultMatrix, sleep, withoutEnv } from "../support/fault-matrix.js";
import { REDIS_SENTINELS_ENV, startRedisSentinel, type RedisSentinelGroup } from "../support/servers/redis-sentinel.js";

// Issue #13, Redis Sentinel with real processes: four worker processes share limit 200 per 1000 ms
// over 20 partitions (TTL 3 s) through RedisLeaseBackend on an ioredis Sentinel client (see
// sentinelClientOptions in backend-spec.ts), against one primary, two replicas and three Sentinels
// started here (never REDIS_SENTINELS: the row kills the primary; down-after-milliseconds 1 s,
// failover-timeout 3 s). The primary is SIGKILLed; the Sentinels promote a replica and the clients
// follow. About 25 s.
//
// Replication is asynchronous: a grant or renewal the primary acknowledged but had not yet sent
// to its replica is forgotten by the promoted replica, which then grants that partition to a second
// holder while the first still admits on it. 0 windows over is guaranteed only once the backend
// detects the promoted replica (a different run_id) and waits out a grace before granting; until
// then this row passes when no acknowledged write was in flight at the kill (the usual case on loopback).

const TTL = 3000;

let group: RedisSentinelGroup;
const report = new ClusterReport("Redis Sentinel fault rows (4 processes, limit 200/1000 ms, 20 partitions, ttl 3000 ms, jitterMs 50):");
const spec = () => ({ kind: "redis-sentinel" as const, sentinels: [...group.sentinels], name: group.name, keyPrefix: "faults:" });
const matrix = new FaultMatrix({
  backend: "redis sentinel",
  ttlMs: TTL,
  // The client follows the Sentinels to whichever node is primary: no proxy in between.
  serverPorts: () => [],
  workerSpec: spec,
  directSpec: spec,
});

beforeAll(async () => {
  group = await withoutEnv([REDIS_SENTINELS_ENV], () => startRedisSentinel());
}, 90_000);
afterAll(async () => {
  await group?.stop();
  process.stdout.write(report.table());
});

test("the primary SIGKILLed, a replica promoted by the Sentinels, the old primary restarted as a replica: 0 windows over; the promotion starts the backend-epoch grace; surviving leases go on", async () => {
  let killedAt = 0;
  let promotedMs = 0;
  let tail = { from: 0, to: 0 };
  let timeline: HeldTimeline | null = null;
  let backendErrors = 0;
  let victim = 0;
  let graceMs = 0;
  const result = await matrix.row(async (r) => {
    timeline = new HeldTimeline(r.group);
    victim = await group.primary();
    killedAt = r.recorder.now();
    await group.kill(victim);
    r.mark("primary killed");
    await group.waitForFailover(victim, 20_000);
    promotedMs = r.recorder.now() - killedAt;
    r.mark("replica promoted");
    // The promoted replica has another run_id: it grants nothing for the backend-epoch grace
    // (docs/guarantee.md, G2), since it may lack grants its primary made. Leases it has go on,
    // those that lapsed during the failover included (Redis never revives an expired lease);
    // partitions whose leases ran out during the failover stay free until the grace ends.
    await sleep(2 * TTL);
    graceMs = Math.max(...r.group.workers.map((w) => w.stats()?.limiter.backend.graceRemainingMs ?? 0));
    tail = { from: r.recorder.now(), to: r.recorder.now() + 4000 };
    await sleep(4000);
    await group.restart(victim);
    r.mark("old primary back as a replica");
    await sleep(2000);
    timeline.stop();
    backendErrors = r.group.workers.reduce((s, w) => s + (w.stats()?.limiter.backendErrors ?? 0), 0);
  });
  const takeoverMs = timeline!.takeoverMs(killedAt, matrix.partitions);
  const row = report.add("Redis Sentinel, 1 + 2, 3 Sentinels (TTL 3 s)", "primary SIGKILLed, failover; restarted as a replica", result, {
    takeoverMs,
    minHeld: timeline!.minHeld(killedAt),
    rateBackMs: rateBackMs(result.arrivals, killedAt, tail.to, matrix.limit, matrix.intervalMs),
    tailUtilisation: utilisationOf(result.arrivals, tail.from, tail.to, matrix.limit, matrix.intervalMs),
    backendErrors,
  });
  process.stdout.write(`${row}\n  killed the primary on ${victim}; Sentinels failed over after ${promotedMs.toFixed(0)} ms; backend-epoch grace ${Math.round(graceMs / 1000)} s left ${2 * TTL / 1000} s later\n`);
  expect(result.audit.overLimitWindows).toBe(0);
  expect(result.lost).toBe(0);
  expect(graceMs).toBeGreaterThan(50_000);
}, 120_000);
