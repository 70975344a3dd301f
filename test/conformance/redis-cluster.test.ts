import { Cluster } from "ioredis";
import { RedisLeaseBackend } from "../../src/lease-backends/redis.js";
import { clusterClientOptions } from "../support/backend-spec.js";
import { startRedisCluster, type RedisCluster } from "../support/servers/redis-cluster.js";
import { TcpProxy } from "../support/tcp-proxy.js";
import { describeLeaseBackendConformance } from "../../src/testing/conformance.js";

// RedisLeaseBackend over an ioredis Cluster client (3 primaries + 3 replicas, or REDIS_CLUSTER_NODES).
// Every node is reached through a TcpProxy (natMap maps each announced address to its proxy), so a
// stall is a blackhole of all of them, on a managed cluster and an external one alike. Each test's
// fresh resource name lands on its own hash slot, so the suite runs on all three primaries.

let cluster: RedisCluster;
let proxies: TcpProxy[] = [];
let natMap: Record<string, { host: string; port: number }> = {};
const clients: Cluster[] = [];

async function connect(): Promise<RedisLeaseBackend> {
  const startup = Object.values(natMap);
  const client = new Cluster(startup, clusterClientOptions(natMap));
  clients.push(client);
  await client.connect();
  return new RedisLeaseBackend({ client, keyPrefix: "conf:" });
}

describeLeaseBackendConformance(
  "redis cluster (3 primaries, 3 replicas)",
  async () => {
    cluster = await startRedisCluster();
    const nodes = await cluster.topology();
    proxies = nodes.map((n) => new TcpProxy(n.port, n.host));
    await Promise.all(proxies.map((p) => p.start()));
    natMap = Object.fromEntries(nodes.map((n, i) => [n.address, { host: "127.0.0.1", port: proxies[i]!.port }]));
    return {
      backend: await connect(),
      newClient: connect,
      ttlMs: 1000,
      restoreNotApplicable: "a cluster runs the same scripts as one server; restores are covered by the single-server Redis runner and the Sentinel fault rows",
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
    for (const client of clients) client.disconnect();
    await Promise.all(proxies.map((p) => p.stop()));
    await cluster?.stop();
  },
);
