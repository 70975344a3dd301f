import { randomUUID } from "node:crypto";
import { startRedisTrio } from "../support/servers/redis.js";
import { describeSharedQuota } from "../support/describe-shared-quota.js";

// Redlock over three redis-servers started here; about 20 s in all.
describeSharedQuota({
  name: "redlock",
  leaseTtlMs: 2_000,
  resource: `it-redlock-${randomUUID().slice(0, 8)}`,
  timeoutMs: 90_000,
  start: async () => {
    const servers = await startRedisTrio();
    return {
      spec: { kind: "redlock", urls: servers.map((s) => s.url), keyPrefix: "it:" },
      stop: async () => void (await Promise.all(servers.map((s) => s.stop()))),
    };
  },
});
