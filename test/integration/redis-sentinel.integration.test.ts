import { randomUUID } from "node:crypto";
import { startRedisSentinel } from "../support/servers/redis-sentinel.js";
import { describeSharedQuota } from "../support/describe-shared-quota.js";

// A Sentinel-managed Redis (1 primary, 2 replicas, 3 Sentinels) started here, or the one
// REDIS_SENTINELS names; the workers use ioredis Sentinel clients (sentinelClientOptions). About 25 s.
describeSharedQuota({
  name: "redis sentinel",
  leaseTtlMs: 2_000,
  resource: `it-redis-sentinel-${randomUUID().slice(0, 8)}`,
  timeoutMs: 120_000,
  start: async () => {
    const group = await startRedisSentinel();
    return { spec: { kind: "redis-sentinel", sentinels: [...group.sentinels], name: group.name, keyPrefix: "it:" }, stop: () => group.stop() };
  },
});
