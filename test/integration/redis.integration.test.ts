import { randomUUID } from "node:crypto";
import { startRedis } from "../support/servers/redis.js";
import { describeSharedQuota } from "../support/describe-shared-quota.js";

// One redis-server started here; about 20 s in all (10 s of steady state, a takeover of about one TTL).
describeSharedQuota({
  name: "redis",
  leaseTtlMs: 2_000,
  resource: `it-redis-${randomUUID().slice(0, 8)}`,
  timeoutMs: 90_000,
  start: async () => {
    const server = await startRedis();
    return { spec: { kind: "redis", url: server.url, keyPrefix: "it:" }, stop: () => server.stop() };
  },
});
