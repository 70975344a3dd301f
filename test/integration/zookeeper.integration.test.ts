import { randomUUID } from "node:crypto";
import { startZooKeeper } from "../support/servers/zookeeper.js";
import { describeSharedQuota } from "../support/describe-shared-quota.js";

// One standalone ZooKeeper started here (or ZOOKEEPER_CONNECT); about 20 s in all.
describeSharedQuota({
  name: "zookeeper",
  leaseTtlMs: 2_000,
  resource: `it-zookeeper-${randomUUID().slice(0, 8)}`,
  timeoutMs: 90_000,
  start: async () => {
    const server = await startZooKeeper();
    return { spec: { kind: "zookeeper", connectString: server.connectString, root: "/it" }, stop: () => server.stop() };
  },
});
