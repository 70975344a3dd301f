import { noop } from "cockatiel";
import { Etcd3 } from "etcd3";
import { EtcdLeaseBackend } from "../../src/lease-backends/etcd.js";
import { startEtcd, type EtcdServer } from "../support/servers/etcd.js";
import { describeLeaseBackendConformance } from "./lease-backend-conformance.js";

let server: EtcdServer;
const clients: Etcd3[] = [];

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
    return {
      backend: new EtcdLeaseBackend({ client: connect(), prefix: "conf/" }),
      // A separate Etcd3 client per racer: its own gRPC channel, as another process would have.
      newClient: async () => new EtcdLeaseBackend({ client: connect(), prefix: "conf/" }),
      ttlMs: 2000,
      graceMs: 2000,
      wait: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
      stall: async () => {
        server.pause();
        return async () => server.resume();
      },
    };
  },
  async () => {
    for (const client of clients) client.close();
    await server?.stop();
  },
);
