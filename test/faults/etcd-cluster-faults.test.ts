import { ClusterReport, HeldTimeline, pacedCeiling, rateBackMs, utilisationOf } from "../support/cluster-rows.js";
import { createBackend } from "../support/backend-spec.js";
import { FaultMatrix, sleep, withoutEnv } from "../support/fault-matrix.js";
import { ETCD_CLUSTER_ENV, startEtcdCluster, type EtcdCluster } from "../support/servers/etcd-cluster.js";
import { untilGranting } from "../support/servers/etcd.js";

// Issue #13, etcd leader failover with real processes: four worker processes share limit 200 per
// 1000 ms over 20 partitions (TTL 3 s) through a three-member etcd cluster started here (never
// ETCD_CLUSTER_ENDPOINTS: the row kills a member), each member reached through a TcpProxy, the
// client given all three endpoints and made as the README advises (faultHandling noop). The Raft
// leader is SIGKILLed at about 9 s and restarted with its data at about 14 s.
//
// Found by this row: renewals failed for longer than the safety margin during the failover, the
// limiters released the partitions whose local deadlines passed, and since etcd revives every lease
// on a leader change (which the backend cannot tell from a restore) it granted nothing for
// backendEpochGraceMs (about 61 s): half the quota stayed unused. Now a lapsed partition stays
// held, unusable, until a renewal finds it still this grant (etcd kept and extended it), see
// src/limiter/lease-manager.ts. Run with
//   flock /tmp/prl-heavy.lock npx jest test/faults/etcd-cluster-faults.test.ts --selectProjects system --runInBand
// Two rows: the README's client, and one with a per-host circuit breaker so calls skip the dead
// member, each on a cluster of its own: both clusters are started and warmed up at once (a fresh
// etcd grants nothing for ~61 s, and so does one whose leader changed, which a shared cluster
// would make the second row wait out). About 80 s after the warm-up.

const TTL = 3000;

/** One cluster per row: [the README's client, the per-host breaker]. */
let clusters: EtcdCluster[] = [];
const directSpec = (cluster: EtcdCluster) => ({ kind: "etcd" as const, endpoints: [...cluster.endpoints], prefix: "faults/" });
const report = new ClusterReport("etcd cluster fault rows (4 processes, limit 200/1000 ms, 20 partitions, ttl 3000 ms, jitterMs 50):");
/** The row's matrix; `hostBreakerMs` gives the workers' clients a per-host circuit breaker (see BackendSpec). */
const matrixWith = (cluster: EtcdCluster, hostBreakerMs?: number) =>
  new FaultMatrix({
    backend: "etcd cluster",
    ttlMs: TTL,
    serverPorts: () => cluster.endpoints.map((e) => Number(new URL(e).port)),
    workerSpec: (ports) => ({
      kind: "etcd",
      endpoints: ports.map((p) => `http://127.0.0.1:${p}`),
      prefix: "faults/",
      ...(hostBreakerMs === undefined ? {} : { hostBreakerMs }),
    }),
    directSpec: () => directSpec(cluster),
  });

beforeAll(async () => {
  // Short raft timings (the README's figures): a failover in well under a second.
  clusters = await withoutEnv([ETCD_CLUSTER_ENV], () => Promise.all([0, 1].map(() => startEtcdCluster({ heartbeatMs: 50, electionMs: 500 }))));
  // A fresh etcd grants nothing until its server clock has run backendEpochGraceMs (about 61 s).
  const waits = await Promise.all(
    clusters.map(async (cluster) => {
      const direct = await createBackend(directSpec(cluster));
      try {
        return await untilGranting(direct.backend, TTL);
      } finally {
        await direct.close();
      }
    }),
  );
  process.stdout.write(`fresh clusters: first grant after ${waits.join(" ms, ")} ms\n`);
}, 150_000);
afterAll(async () => {
  await Promise.all(clusters.map((cluster) => cluster.stop()));
  process.stdout.write(report.table());
});

/** The leader-failover row on `matrix`; reports it as `client` and asserts the correct behaviour. */
async function leaderFailover(cluster: EtcdCluster, matrix: FaultMatrix, client: string): Promise<void> {
  let killedAt = 0;
  let restartedAt = 0;
  let tail = { from: 0, to: 0 };
  let timeline: HeldTimeline | null = null;
  let backendErrors = 0;
  let unused: number[] = [];
  let serverHolders: Record<number, string | null> = {};
  let resource = "";
  const result = await matrix.row(async (r) => {
    resource = r.resource;
    timeline = new HeldTimeline(r.group);
    // Ramp and 2 s of steady state are behind us; 5 s more puts the kill at about 9 s.
    await sleep(5000);
    const leader = await cluster.leader();
    killedAt = r.recorder.now();
    await cluster.kill(leader);
    r.mark("leader killed");
    await sleep(5000);
    await cluster.restart(leader);
    restartedAt = r.recorder.now();
    r.mark("leader restarted");
    // A partition lost in the outage is back on the server within one TTL (etcd lease expiry,
    // plus the extension a new leader grants every lease) and a backoff; measure after that.
    await sleep(TTL + 3000);
    tail = { from: r.recorder.now(), to: r.recorder.now() + 5000 };
    await sleep(5000);
    timeline.stop();
    await r.unitsIn(0, Infinity); // fetch every arrival
    const live = r.group.workers.filter((w) => w.alive);
    const used = new Set(live.flatMap((w) => w.stats()?.limiter.partitions ?? []));
    unused = [...Array(matrix.partitions).keys()].filter((p) => !used.has(p));
    backendErrors = live.reduce((s, w) => s + (w.stats()?.limiter.backendErrors ?? 0), 0);
    const direct = await createBackend(directSpec(cluster));
    try {
      const states = await direct.backend.inspect(r.resource, { timeoutMs: 5000 });
      serverHolders = Object.fromEntries(unused.map((p) => [p, states.partitions[p]?.holderId ?? null]));
    } finally {
      await direct.close();
    }
  });
  const tailUtilisation = utilisationOf(result.arrivals, tail.from, tail.to, matrix.limit, matrix.intervalMs);
  const row = report.add(`etcd, 3 members (TTL 3 s), ${client}`, "leader SIGKILLed, restarted with its data 5 s later", result, {
    takeoverMs: timeline!.takeoverMs(killedAt, matrix.partitions),
    minHeld: timeline!.minHeld(killedAt, tail.to),
    rateBackMs: rateBackMs(result.arrivals, killedAt, tail.to, matrix.limit, matrix.intervalMs),
    tailUtilisation,
    backendErrors,
  });
  process.stdout.write(
    `${row}\n  resource ${resource}; leader restarted ${((restartedAt - killedAt) / 1000).toFixed(1)} s after the kill; partitions used by no live worker at the end: ${JSON.stringify(unused)}; ` +
      `their holders on the server: ${JSON.stringify(serverHolders)}; paced ceiling ${(pacedCeiling(matrix.intervalMs, matrix.jitterMs) * 100).toFixed(1)}%\n`,
  );
  expect(result.audit.overLimitWindows).toBe(0);
  expect(result.lost).toBe(0);
  expect(unused).toEqual([]);
  expect(tailUtilisation).toBeGreaterThanOrEqual(0.97 * pacedCeiling(matrix.intervalMs, matrix.jitterMs));
}

test("leader SIGKILLed at ~9 s, restarted at ~14 s (client as the README advises): 0 windows over, the whole quota used again within TTL + a few s", async () => {
  await leaderFailover(clusters[0]!, matrixWith(clusters[0]!), "faultHandling noop");
}, 150_000);

test("the same with a per-host circuit breaker (skip a member 1 s after a failure): 0 windows over, the whole quota used again", async () => {
  await leaderFailover(clusters[1]!, matrixWith(clusters[1]!, 1000), "per-host breaker 1 s");
}, 150_000);
