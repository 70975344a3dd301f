import { randomUUID } from "node:crypto";
import { startEtcd } from "../support/servers/etcd.js";
import { describeSharedQuota } from "../support/describe-shared-quota.js";

// One etcd started here; about 20 s in all. etcd TTLs are whole seconds.
describeSharedQuota({
  name: "etcd",
  leaseTtlMs: 2_000,
  resource: `it-etcd-${randomUUID().slice(0, 8)}`,
  timeoutMs: 90_000,
  start: async () => {
    const server = await startEtcd();
    return { spec: { kind: "etcd", endpoints: [server.endpoint], prefix: "it/" }, stop: () => server.stop() };
  },
});
