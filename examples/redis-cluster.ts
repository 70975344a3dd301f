import { Cluster } from "ioredis";
import { PartitionedRateLimiter } from "partitioned-rate-limiter";
import { RedisLeaseBackend } from "partitioned-rate-limiter/redis";

// REDIS_CLUSTER_NODES: comma-separated host:port of some cluster nodes (any of them will do).
const startupNodes = (process.env.REDIS_CLUSTER_NODES ?? "127.0.0.1:7000").split(",").map((node) => {
  const [host, port] = node.split(":");
  return { host: host!, port: Number(port) };
});
const cluster = new Cluster(startupNodes, {
  enableOfflineQueue: false, // required, as for one Redis (checked: ConfigError)
  scaleReads: "master", // ioredis's default: never read lease keys from a replica
  maxRedirections: 3, retryDelayOnFailover: 100, retryDelayOnClusterDown: 100, retryDelayOnTryAgain: 100,
  slotsRefreshTimeout: 1000,
  redisOptions: { maxRetriesPerRequest: 1, commandTimeout: 2000, connectTimeout: 2000 },
});
cluster.on("error", (error: Error) => console.error("redis cluster:", error.message));
await new Promise<void>((resolve) => cluster.once("ready", () => resolve()));
const backend = new RedisLeaseBackend({ client: cluster });

const limiter = new PartitionedRateLimiter({ resource: "reports-api", limit: 100, intervalMs: 1000, partitions: 10, backend });
await limiter.acquire();
console.log(`admitted; the resource lives on slot ${await cluster.cluster("KEYSLOT", "prl:{reports-api}:plan")}`);
await limiter.close();
await cluster.quit();
