import { validatePlan } from "../../src/contract/plan.js";
import { backendEpochGraceMs } from "../../src/contract/timing.js";
import { createBackend } from "../support/backend-spec.js";
import { FaultMatrix, killMostHeld, sleep, stopMostHeld, withoutEnv } from "../support/fault-matrix.js";
import { startEtcd, untilGranting, type EtcdServer } from "../support/servers/etcd.js";

// The real-process fault matrix on etcd (issue #8): four worker processes saturate one shared
// quota through a real single-member etcd started here (never ETCD_ENDPOINTS: rows kill and wipe
// it), reached through a TcpProxy; every request is recorded where it arrives and audited exactly.
// One row per fault; each row ~10-15 s, the state-loss row ~75 s (etcd grants nothing for
// backendEpochGraceMs after it may have forgotten leases), plus ~61 s of warm-up on the fresh
// server. etcd TTLs are whole seconds, minimum 2 s.

const TTL = 2000;

let server: EtcdServer;
const endpointPort = (): number => Number(new URL(server.endpoint).port);
const matrix = new FaultMatrix({
  backend: "etcd",
  ttlMs: TTL,
  serverPorts: () => [endpointPort()],
  workerSpec: ([port]) => ({ kind: "etcd", endpoints: [`http://127.0.0.1:${port}`], prefix: "faults/" }),
  directSpec: () => ({ kind: "etcd", endpoints: [server.endpoint], prefix: "faults/" }),
});

beforeAll(async () => {
  server = await withoutEnv(["ETCD_ENDPOINTS"], startEtcd);
  // A fresh etcd grants nothing until its server clock has run backendEpochGraceMs.
  const direct = await createBackend({ kind: "etcd", endpoints: [server.endpoint], prefix: "faults/" });
  try {
    process.stdout.write(`fresh etcd: first grant after ${await untilGranting(direct.backend, TTL)} ms\n`);
  } finally {
    await direct.close();
  }
}, 150_000);
afterAll(async () => {
  await server?.stop();
  process.stdout.write(matrix.table());
});

test("1. SIGKILL a worker: its capacity is reused within TTL + etcd's expiry sweep + one acquisition cycle", async () => {
  let recovery = 0;
  let victimHeld = 0;
  const result = await matrix.row(async (r) => {
    ({ victimHeld, recoveryMs: recovery } = await killMostHeld(r, TTL + 5000, 2000));
  });
  matrix.report("SIGKILL one worker", `1 kill (victim held ${victimHeld})`, result, recovery);
  expect(victimHeld).toBeGreaterThan(0);
  expect(result.audit.overLimitWindows).toBe(0);
  expect(result.lost).toBe(0);
  // etcd frees the victim's keys when its etcd lease expires, ttl after its last keepalive (etcd
  // revokes expired leases every 500 ms); the survivors' backoff is at most ttl / 4.
  expect(recovery).toBeLessThanOrEqual(TTL + 500 + TTL / 4 + 500);
}, 90_000);

test("2. SIGSTOP a worker longer than the TTL, then SIGCONT: it admits nothing on expired leases, then rejoins", async () => {
  let recovery = 0;
  let duringPause = -1;
  let rejoined = 0;
  const result = await matrix.row(async (r) => {
    ({ recoveryMs: recovery, duringPause, rejoined } = await stopMostHeld(r, TTL, matrix.partitions));
  });
  matrix.report("SIGSTOP one worker 2.5 x TTL", "1 stop/cont", result, recovery);
  expect(duringPause).toBe(0);
  expect(rejoined).toBeGreaterThan(0);
  expect(result.audit.overLimitWindows).toBe(0);
  expect(result.lost).toBe(0);
}, 90_000);

test("3. etcd killed and restarted with its data wiped: workers stop by their deadlines, nothing is granted during the grace, then they recover", async () => {
  // The plan the workers run under: the new server clock holds every grant for this long.
  const grace = backendEpochGraceMs(validatePlan({ limit: matrix.limit, intervalMs: matrix.intervalMs, partitions: matrix.partitions, leaseTtlMs: TTL, jitterMs: matrix.jitterMs }));
  let recovery = 0;
  let afterDeadlines = -1;
  let duringGrace = -1;
  const result = await matrix.row(async (r) => {
    const killedAt = r.recorder.now();
    await server.kill();
    r.mark("killed");
    await sleep(TTL + 500);
    afterDeadlines = await r.unitsIn(killedAt + TTL + 100, r.recorder.now());
    // State loss: the plan, every partition key and every etcd lease are gone.
    await server.restart({ wipe: true });
    r.mark("restarted");
    const upAt = r.recorder.now();
    // The first tryAcquire finds no plan; ensurePlan re-creates it, and the server clock (restarted
    // on the empty store, after upAt) holds every grant for backendEpochGraceMs.
    recovery = (await r.full(grace + 2 * TTL + 10_000, "recovery after the restart")) - upAt;
    duringGrace = await r.unitsIn(killedAt + TTL + 100, upAt + grace - 500);
    await sleep(2000);
  });
  matrix.report("etcd killed, restarted with its data wiped", "1 kill + wipe + restart (down 2.5 s)", result, recovery);
  expect(afterDeadlines).toBe(0);
  expect(duringGrace).toBe(0);
  expect(result.audit.overLimitWindows).toBe(0);
  expect(result.lost).toBe(0);
  expect(recovery).toBeGreaterThanOrEqual(grace - 500);
}, 180_000);

test("4. network blackholed (TcpProxy) for 2 x TTL: calls time out, workers stop by their deadlines, no hang", async () => {
  let recovery = 0;
  let afterDeadlines = -1;
  const result = await matrix.row(async (r) => {
    const at = r.recorder.now();
    // Held, not dropped: TCP delivers after a partition heals.
    r.proxy.blackhole("hold");
    r.mark("blackhole");
    await sleep(2 * TTL);
    afterDeadlines = await r.unitsIn(at + TTL + 100, r.recorder.now());
    r.proxy.heal();
    r.mark("heal");
    const healedAt = r.recorder.now();
    recovery = (await r.full(TTL + 10_000, "recovery after the partition healed")) - healedAt;
    await sleep(2000);
  });
  matrix.report("network blackholed 2 x TTL", "1 blackhole", result, recovery);
  expect(afterDeadlines).toBe(0);
  expect(result.audit.overLimitWindows).toBe(0);
  expect(result.lost).toBe(0);
}, 90_000);
