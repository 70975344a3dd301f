import { randomUUID } from "node:crypto";
import { startEtcdCluster } from "../support/servers/etcd-cluster.js";
import { describeSharedQuota } from "../support/describe-shared-quota.js";
import { warmUp } from "../support/etcd-warm-up.js";

// A three-member etcd cluster started here, or the one ETCD_CLUSTER_ENDPOINTS names; every worker's
// client is given all three endpoints. About 25 s after a ~61 s warm-up. etcd TTLs are whole seconds.
describeSharedQuota({
  name: "etcd cluster",
  leaseTtlMs: 2_000,
  // TTL, etcd's expiry sweep (every 500 ms), then a survivor's acquire backoff (at most TTL / 4) and its call.
  takeoverBoundMs: 2_000 + 500 + 500 + 500,
  resource: `it-etcd-cluster-${randomUUID().slice(0, 8)}`,
  timeoutMs: 210_000,
  start: async () => {
    const cluster = await startEtcdCluster();
    const spec = { kind: "etcd" as const, endpoints: [...cluster.endpoints], prefix: "it/" };
    await warmUp(spec);
    return { spec, stop: () => cluster.stop() };
  },
});
