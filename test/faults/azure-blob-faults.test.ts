import { randomUUID } from "node:crypto";
import { FaultMatrix, killMostHeld, sleep, withoutEnv } from "../support/fault-matrix.js";
import { connectionStringFor, startAzurite, type AzuriteServer } from "../support/servers/azurite.js";

// The real-process fault matrix on Azure Blob leases (issue #8): four worker processes saturate one
// shared quota through an Azurite started here (never AZURE_STORAGE_CONNECTION_STRING: a row kills
// it), reached through a TcpProxy; every request is recorded where it arrives and audited exactly.
// Azure leases last at least 15 s, so each row takes ~30 s.

const TTL = 15_000;
const CONTAINER = `faults-${randomUUID().slice(0, 8)}`;

let server: AzuriteServer;
const matrix = new FaultMatrix({
  backend: "azure-blob (Azurite)",
  ttlMs: TTL,
  serverPorts: () => [server.blobPort],
  workerSpec: ([port]) => ({ kind: "azure-blob", connectionString: connectionStringFor(port!, server.queuePort), container: CONTAINER }),
  directSpec: () => ({ kind: "azure-blob", connectionString: server.connectionString, container: CONTAINER }),
});

beforeAll(async () => {
  server = await withoutEnv(["AZURE_STORAGE_CONNECTION_STRING"], () => startAzurite());
}, 60_000);
afterAll(async () => {
  await server?.stop();
  process.stdout.write(matrix.table());
});

test("1. Azurite killed and restarted empty: renewals find nothing, no grant before the grace of one TTL, then recovery", async () => {
  let recovery = 0;
  let firstGrant = 0;
  const result = await matrix.row(async (r) => {
    await server.kill();
    r.mark("killed");
    await sleep(2000);
    // State loss: the container, the plan and every lease are gone. Renewals get 404 (lost at
    // once); the first tryAcquire finds no plan and ensurePlan re-creates it with a grace of one TTL.
    await server.restart();
    const upAt = r.recorder.now();
    r.mark("restarted");
    // Renewals after the restart get 404: the leases end at once (or by their deadlines).
    await r.group.waitFor(() => r.group.heldPartitions() < matrix.partitions, TTL, "leases lost after the restart");
    r.mark("lost");
    // Every old lease ends by its holder's deadline (within one TTL of its last renewal, before the
    // kill); the plan stored again grants nothing for at least one TTL (history "lost", or 60 s +
    // one window for "unknown"), so nothing is held in between: the first grant after that is new.
    await r.group.waitFor(() => r.group.heldPartitions() === 0, TTL + 2000, "every old lease ended");
    r.mark("none held");
    firstGrant = (await r.group.waitFor(() => r.group.heldPartitions() > 0, 2 * 60_000, "a first grant after the restart")) - upAt;
    recovery = (await r.full(TTL + 10_000, "recovery after the restart")) - upAt;
    await sleep(2000);
  });
  matrix.report("Azurite killed, restarted empty (down 2 s)", "1 kill + restart", result, recovery);
  console.log(`Azurite restarted empty: first grant ${firstGrant.toFixed(0)} ms, every partition held again ${recovery.toFixed(0)} ms after the restart`);
  expect(result.audit.overLimitWindows).toBe(0);
  expect(result.lost).toBe(0);
  // The creation grace of the plan stored again (≥ one TTL, by the server's clock, from after the restart).
  expect(firstGrant).toBeGreaterThanOrEqual(TTL - 100);
  expect(recovery).toBeGreaterThanOrEqual(firstGrant);
}, 3 * 60_000);

test("2. SIGKILL a worker: its capacity is reused within TTL + one acquisition cycle", async () => {
  let recovery = 0;
  let victimHeld = 0;
  const result = await matrix.row(async (r) => {
    ({ victimHeld, recoveryMs: recovery } = await killMostHeld(r, TTL + 8000, 1000));
  });
  matrix.report("SIGKILL one worker", `1 kill (victim held ${victimHeld})`, result, recovery);
  expect(victimHeld).toBeGreaterThan(0);
  expect(result.audit.overLimitWindows).toBe(0);
  expect(result.lost).toBe(0);
  // Azure frees the victim's leases ttl after its last renewal; the survivors' backoff is at most ttl / 4.
  expect(recovery).toBeLessThanOrEqual(TTL + TTL / 4 + 1000);
}, 60_000);
