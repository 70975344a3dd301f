import { noop } from "cockatiel";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Etcd3 } from "etcd3";
import { withoutEnv } from "../support/fault-matrix.js";
import { ETCD_CLUSTER_ENV, startEtcdCluster, type EtcdCluster } from "../support/servers/etcd-cluster.js";

// What a backend can and cannot see after an etcd cluster is restored from a snapshot
// (`etcdctl snapshot save` / `snapshot restore`), measured on a three-member cluster started here
// (never ETCD_CLUSTER_ENDPOINTS: it stops and restores the cluster). About 20 s.

let cluster: EtcdCluster;
const dir = mkdtempSync(join(tmpdir(), "prl-etcd-snapshot-"));
const clients: Etcd3[] = [];

function connect(): Etcd3 {
  const client = new Etcd3({ hosts: [...cluster.endpoints], faultHandling: { host: () => noop, global: noop } });
  clients.push(client);
  return client;
}

beforeAll(async () => {
  cluster = await withoutEnv([ETCD_CLUSTER_ENV], () => startEtcdCluster());
}, 60_000);
afterAll(async () => {
  for (const c of clients) c.close();
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test("a restore with the same cluster token keeps the cluster id and turns revision and term back; a new token changes the id; leases come back with a full TTL", async () => {
  const before = connect();
  // 6 s: the restored lease lives one TTL from the new leader's election, and a loaded machine took
  // more than 3 s from there to the read below (CI found a 3 s lease already gone again).
  const lease = await before.leaseClient.leaseGrant({ TTL: 6 });
  await before.kv.put({ key: Buffer.from("leased"), value: Buffer.from("granted before the snapshot"), lease: lease.ID });
  await before.put("plain").value("before");
  const snapshot = join(dir, "snapshot.db");
  await cluster.snapshotSave(snapshot);
  const atSnapshot = (await before.kv.range({ key: Buffer.from("plain") })).header;
  await before.put("plain").value("after");
  await before.put("later").value("after");
  // A leader change bumps the raft term, as failovers before a restore would.
  await cluster.restart(await cluster.leader());
  await cluster.waitHealthy();
  // Past the TTL without a keepalive: the lease and its key are gone.
  await new Promise((r) => setTimeout(r, 7500));
  expect(await before.get("leased").string()).toBeNull();
  const latest = (await before.kv.range({ key: Buffer.from("plain") })).header;
  expect(Number(latest.revision)).toBeGreaterThan(Number(atSnapshot.revision));
  expect(Number(latest.raft_term)).toBeGreaterThan(Number(atSnapshot.raft_term));

  await cluster.restoreSnapshot(snapshot, cluster.token);
  const same = connect();
  const sameHeader = (await same.kv.range({ key: Buffer.from("plain") })).header;
  // Indistinguishable by id: only a revision or term lower than one seen before tells.
  expect(sameHeader.cluster_id).toBe(latest.cluster_id);
  expect(Number(sameHeader.revision)).toBeLessThan(Number(latest.revision));
  expect(Number(sameHeader.raft_term)).toBeLessThan(Number(latest.raft_term));
  expect(await same.get("plain").string()).toBe("before");
  expect(await same.get("later").string()).toBeNull();
  // The expired lease is back, with a full TTL, and holds its key again.
  expect(await same.get("leased").string()).toBe("granted before the snapshot");
  const ttl = await same.leaseClient.leaseTimeToLive({ ID: lease.ID });
  expect(Number(ttl.TTL)).toBeGreaterThan(2);

  await cluster.restoreSnapshot(snapshot, `${cluster.token}-restored`);
  const renamed = connect();
  const newHeader = (await renamed.kv.range({ key: Buffer.from("plain") })).header;
  expect(newHeader.cluster_id).not.toBe(latest.cluster_id);
  expect(Number(newHeader.revision)).toBe(Number(sameHeader.revision));
  process.stdout.write(
    `etcd snapshot restore: cluster id ${latest.cluster_id} → same token ${sameHeader.cluster_id}, new token ${newHeader.cluster_id}; ` +
      `revision ${latest.revision} → ${sameHeader.revision}; raft term ${latest.raft_term} → ${sameHeader.raft_term}; lease TTL after restore ${ttl.TTL} s of 6\n`,
  );
}, 90_000);
