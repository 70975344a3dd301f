import { randomUUID } from "node:crypto";
import { startRedisCluster } from "../support/servers/redis-cluster.js";
import { describeSharedQuota } from "../support/describe-shared-quota.js";

// A Redis Cluster (3 primaries + 3 replicas) started here, or the one REDIS_CLUSTER_NODES names; the
// workers use ioredis Cluster clients (clusterClientOptions). About 25 s.
describeSharedQuota({
  name: "redis cluster",
  leaseTtlMs: 2_000,
  resource: `it-redis-cluster-${randomUUID().slice(0, 8)}`,
  timeoutMs: 120_000,
  start: async () => {
    const cluster = await startRedisCluster();
    return { spec: { kind: "redis-cluster", nodes: [...cluster.nodes], keyPrefix: "it:" }, stop: () => cluster.stop() };
  },
});
