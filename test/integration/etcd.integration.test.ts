import { randomUUID } from "node:crypto";
import { startEtcd } from "../support/servers/etcd.js";
import { describeSharedQuota } from "../support/describe-shared-quota.js";
import { warmUp } from "../support/etcd-warm-up.js";

// One etcd started here; about 20 s after a ~61 s warm-up. etcd TTLs are whole seconds.
describeSharedQuota({
  name: "etcd",
  leaseTtlMs: 2_000,
  // TTL, etcd's expiry sweep (every 500 ms), then a survivor's acquire backoff (at most TTL / 4) and its call.
  takeoverBoundMs: 2_000 + 500 + 500 + 500,
  resource: `it-etcd-${randomUUID().slice(0, 8)}`,
  timeoutMs: 180_000,
  start: async () => {
    const server = await startEtcd();
    const spec = { kind: "etcd" as const, endpoints: [server.endpoint], prefix: "it/" };
    await warmUp(spec);
    return { spec, stop: () => server.stop() };
  },
});
