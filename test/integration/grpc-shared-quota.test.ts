import { randomUUID } from "node:crypto";
import { describeSharedQuota } from "../support/describe-shared-quota.js";
import { startGrpcRecorder } from "../support/grpc-recorder.js";
import { startRedis } from "../support/servers/redis.js";

// Four client processes call one gRPC server through limiterInterceptor, sharing its quota
// (200/s) through leases on one redis-server started here. The server enforces the quota
// (RESOURCE_EXHAUSTED with retry pushback beyond it) and every arrival is audited with zero
// tolerance, through a SIGKILL of one client. About 20 s.
describeSharedQuota({
  name: "grpc (redis leases)",
  leaseTtlMs: 2_000,
  resource: `it-grpc-${randomUUID().slice(0, 8)}`,
  timeoutMs: 90_000,
  start: async () => {
    const server = await startRedis();
    return { spec: { kind: "redis", url: server.url, keyPrefix: "it:" }, stop: () => server.stop() };
  },
  recorder: (quota) => startGrpcRecorder({ quota }),
});
