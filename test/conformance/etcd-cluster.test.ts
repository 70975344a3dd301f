import { noop } from "cockatiel";
import { Etcd3 } from "etcd3";
import { EtcdLeaseBackend } from "../../src/lease-backends/etcd.js";
import { startEtcdCluster, type EtcdCluster } from "../support/servers/etcd-cluster.js";
import { untilGranting } from "../support/servers/etcd.js";
import { TcpProxy } from "../support/tcp-proxy.js";
import { describeLeaseBackendConformance } from "../../src/testing/conformance.js";

// EtcdLeaseBackend on a three-member etcd cluster (or ETCD_CLUSTER_ENDPOINTS), the client given
// every member, each through a TcpProxy so a stall is a blackhole of all of them.

let cluster: EtcdCluster;
let proxies: TcpProxy[] = [];
const clients: Etcd3[] = [];

/** A client as the README advises: all endpoints, no client-side retries or circuit breaker. */
function connect(): EtcdLeaseBackend {
  const client = new Etcd3({ hosts: proxies.map((p) => `http://127.0.0.1:${p.port}`), faultHandling: { host: () => noop, global: noop } });
  clients.push(client);
  return new EtcdLeaseBackend({ client, prefix: "conf/" });
}

describeLeaseBackendConformance(
  "etcd cluster (3 members)",
  async () => {
    cluster = await startEtcdCluster();
    proxies = cluster.endpoints.map((e) => {
      const url = new URL(e);
      return new TcpProxy(Number(url.port), url.hostname);
    });
    await Promise.all(proxies.map((p) => p.start()));
    const backend = connect();
    // A new server clock must run before the first grant (see EtcdLeaseBackend).
    await untilGranting(backend, 2000);
    return {
      backend,
      newClient: async () => connect(),
      ttlMs: 3000, // as test/conformance/etcd.test.ts: room for etcd's 500 ms expiry sweep
      restoreNotApplicable: "a cluster restore is covered by test/integration/etcd-snapshot-restore.test.ts",
      wait: (ms: number) => new Promise((resolve) => setTimeout(resolve, ms)),
      stall: async () => {
        for (const p of proxies) p.blackhole("hold");
        return async () => {
          for (const p of proxies) p.heal();
        };
      },
    };
  },
  async () => {
    for (const client of clients) client.close();
    await Promise.all(proxies.map((p) => p.stop()));
    await cluster?.stop();
  },
);
