import { noop } from "cockatiel";
import { Etcd3 } from "etcd3";
import { EtcdLeaseBackend } from "../../src/lease-backends/etcd.js";
import { describeLeaseBackendConformance, type ConformanceTarget } from "../../src/testing/conformance.js";
import { startEtcd, untilGranting, type EtcdServer } from "../support/servers/etcd.js";

// A real etcd on free ports (or ETCD_ENDPOINTS), on real time with 3 s leases: etcd deletes expired
// keys up to 500 ms late, which 2 s leases left too little room for under load.
const TTL_MS = 3000;
let server: EtcdServer;
const clients: Etcd3[] = [];
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A client as the backend's docs tell users to create one: no client-side retries or circuit breaker. */
function connect(): Etcd3 {
  const client = new Etcd3({ hosts: server.endpoint, faultHandling: { host: () => noop, global: noop } });
  clients.push(client);
  return client;
}

describeLeaseBackendConformance(
  "etcd",
  async () => {
    server = await startEtcd();
    const backend = new EtcdLeaseBackend({ client: connect(), prefix: "conf/" });
    await untilGranting(backend, TTL_MS);
    const target: ConformanceTarget = {
      backend,
      // A separate Etcd3 client per racer: its own gRPC channel, as another process would have.
      newClient: async () => new EtcdLeaseBackend({ client: connect(), prefix: "conf/" }),
      ttlMs: TTL_MS,
      wait: sleep,
      stall: async () => {
        server.pause();
        return async () => server.resume();
      },
    };
    if (server.managed) {
      target.snapshot = async () => {
        const restore = await server.snapshot();
        return () => restore({ token: "new" });
      };
    } else {
      target.restoreNotApplicable = "ETCD_ENDPOINTS names an etcd these tests did not start, so they cannot restore it from a snapshot";
    }
    return target;
  },
  async () => {
    for (const client of clients) client.close();
    await server?.stop();
  },
);
